"""Settings from the environment (CHATBOT_*) with defaults, via pydantic-settings."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbot import locations
from chatbot.errors import UserError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATBOT_", extra="ignore")

    data_dir: Path = Field(default_factory=locations.data_dir)
    cache_dir: Path = Field(default_factory=locations.cache_dir)
    # A path or any SQLAlchemy URL; empty means `<data_dir>/chatbot.db`.
    db: str = ""
    # A local transformers directory, a .gguf file or a hub id; empty means the bundled model.
    model: str = ""
    # A folder of .gguf files `chatbot model list` shows and --model takes by name (issue 15).
    models_dir: Path | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    engine: Literal["auto", "reference", "fast", "openai"] = "auto"
    context_budget: int = Field(default=2048, ge=64)
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    top_k: int = Field(default=50, ge=0)
    repetition_penalty: float = Field(default=1.1, gt=0)
    persona: str = "assistant"
    # Memory beyond the window (docs/design.md, Memory): recall from off | conversation | persona | all,
    # into a block with this share of the budget.
    memory: Literal["off", "conversation", "persona", "all"] = "conversation"
    memory_share: float = Field(default=0.25, ge=0.05, le=0.5)
    # A rolling summary of the dropped turns, written by the model between turns, first in the
    # memory block. Off by default: on the bundled 135M model it did not pay (docs/design.md, Memory).
    memory_summary: bool = False
    # Who `{{user}}` is in an imported character card (`persona import`).
    user_name: str = Field(default="User", min_length=1, max_length=100)
    # The openai engine (docs/scale-out.md): an OpenAI-compatible server. The API key is read from
    # the environment variable named here, never from settings or the database.
    base_url: str = ""
    remote_model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    remote_timeout_s: float = Field(default=60.0, gt=0)
    # The server takes `prompt_embeds` on /v1/completions (vLLM --enable-prompt-embeds): soft prompts run there.
    remote_prompt_embeds: bool = False

    def database_url(self) -> str:
        if not self.db:
            return f"sqlite:///{self.data_dir / 'chatbot.db'}"
        if "://" in self.db:
            return self.db
        return f"sqlite:///{Path(self.db).expanduser()}"


def settings_from(**overrides) -> Settings:
    """The settings, these values over the environment's; an invalid one is one line (exit 2)."""
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic.ValidationError: bad env or option value
        raise UserError(f"invalid setting: {_first_error(exc)}", exit_code=2) from exc


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}"
    return str(exc)
