"""Personas: the schema of a persona file, finding and loading personas, soft prompts."""

from chatbot.personas.schema import Persona

__all__ = ["Persona"]
