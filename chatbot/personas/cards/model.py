"""A character card's fields, validated by pydantic, with limits on every size.

Unknown fields are kept (the specs ask readers to ignore, not refuse, what they do not know, and
`persona export` writes the original back). A field beyond its limit is refused with its name:
a card is a prompt for a model with a 2048-token context, so a 200 000-character field is not a
card but an attack on memory or on the terminal.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

TEXT_MAX = 200_000  # characters of one text field
NAME_MAX = 200
LIST_MAX = 200  # greetings, keys, tags
KEY_MAX = 500
ENTRIES_MAX = 2_000
ENTRY_CONTENT_MAX = 50_000


def _no_surrogates(value: str) -> str:
    """A lone surrogate (from a `\\ud800` escape) is not text: it cannot be stored or written."""
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("holds a lone surrogate (not valid text)")
    return value


Valid = AfterValidator(_no_surrogates)
Text = Annotated[str, Field(max_length=TEXT_MAX), Valid]
Name = Annotated[str, Field(max_length=NAME_MAX), Valid]
Key = Annotated[str, Field(max_length=KEY_MAX), Valid]


def _comma_list(value: Any) -> Any:
    """Keys as one comma-separated string (as some editors write them) become a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Keys = Annotated[list[Key], BeforeValidator(_comma_list), Field(max_length=LIST_MAX)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """Editors write null for fields they leave empty: the default then, not a refusal."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class LoreEntry(_Open):
    keys: Keys = Field(default_factory=list)
    content: Annotated[str, Field(max_length=ENTRY_CONTENT_MAX), Valid] = ""
    enabled: bool = True
    insertion_order: float = 0
    case_sensitive: bool | None = None
    use_regex: bool = False
    constant: bool | None = None
    name: Text | None = None
    priority: float | None = None
    id: int | Name | None = None
    comment: Text | None = None
    selective: bool | None = None
    secondary_keys: Keys = Field(default_factory=list)
    position: Name | int | None = None  # "before_char" / "after_char" (some editors: a number)
    extensions: dict[str, Any] = Field(default_factory=dict)


class Lorebook(_Open):
    name: Text | None = None
    description: Text | None = None
    scan_depth: int | None = Field(default=None, ge=0, le=1000)
    token_budget: int | None = Field(default=None, ge=0, le=1_000_000)
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[LoreEntry] = Field(default_factory=list, max_length=ENTRIES_MAX)


class CardData(_Open):
    name: Annotated[str, Field(min_length=1, max_length=NAME_MAX), Valid]
    description: Text = ""
    personality: Text = ""
    scenario: Text = ""
    first_mes: Text = ""
    mes_example: Text = ""
    creator_notes: Text = ""
    system_prompt: Text = ""
    post_history_instructions: Text = ""
    alternate_greetings: list[Text] = Field(default_factory=list, max_length=LIST_MAX)
    character_book: Lorebook | None = None
    tags: list[Name] = Field(default_factory=list, max_length=LIST_MAX)
    creator: Text = ""
    character_version: Text = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    nickname: Name | None = None  # V3

    @property
    def char_name(self) -> str:
        """What `{{char}}` stands for: V3's nickname if it has one, else the name."""
        return self.nickname or self.name


class Card(_Open):
    spec: Literal["chara_card_v2", "chara_card_v3"]
    spec_version: Name = ""
    data: CardData
