"""The `chatbot` command line. Each command group lives in its own module."""

from chatbot.cli.app import main

__all__ = ["main"]
