"""What every command shares: settings, and the model and store once opened (lazily)."""

from dataclasses import dataclass, field
from typing import Any

from chatbot.config import Settings


@dataclass
class AppState:
    settings: Settings
    _cache: dict[str, Any] = field(default_factory=dict)
