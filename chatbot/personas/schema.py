"""The persona file (`persona.toml`), validated by pydantic."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GenerationDefaults(BaseModel):
    """Per-persona sampling defaults; anything unset falls back to the global settings."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    max_new_tokens: int | None = Field(default=None, ge=1)


class SoftPromptRef(BaseModel):
    """Where a soft-prompt persona keeps its PEFT prompt-tuning adapter, relative to its folder."""

    model_config = ConfigDict(extra="forbid")

    path: str = "soft_prompt"
    base_model: str = ""


CARD_FIELDS = ("post_history", "first_messages", "lorebook", "source_card")


class Persona(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    display_name: str = ""
    description: str = ""
    kind: Literal["control_code", "soft_prompt"] = "control_code"
    # The CTRL-style text that conditions every reply (control-code personas).
    control_code: str = ""
    # Where the control code goes: the system turn, or in front of the latest user message
    # (a 135M model follows it far better there; see docs/design.md).
    placement: Literal["system", "user"] = "user"
    greeting: str = ""
    color: str = ""
    generation: GenerationDefaults = GenerationDefaults()
    soft_prompt: SoftPromptRef | None = None
    # For a soft prompt compiled from a control-code persona (`persona distill`): its teacher's
    # name (its control code is kept in the soft prompt's training record).
    distilled_from: str = ""
    # Text put in front of the latest user message whatever the placement (a character card's
    # post_history_instructions: the last word before the reply).
    post_history: str = ""
    # Replies that open a new conversation (a card's first_mes, then its alternate_greetings as
    # siblings of it); stored as the conversation's first message.
    first_messages: tuple[str, ...] = ()
    # A lorebook (world info) file in the persona folder: entries inserted when their keys come up.
    lorebook: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    # The original character card this persona was imported from (a file in its folder).
    source_card: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

    @model_validator(mode="after")
    def _kind_matches_content(self) -> "Persona":
        if self.kind == "soft_prompt" and self.soft_prompt is None:
            raise ValueError("a soft_prompt persona needs a [soft_prompt] table")
        return self

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def definition(self) -> dict:
        """The full definition as plain JSON data (stored with every reply's persona version).
        The card fields are left out while unset, so a persona's version is what it was before
        they existed."""
        data = self.model_dump(mode="json")
        for key in CARD_FIELDS:
            if not data[key]:
                del data[key]
        return data

