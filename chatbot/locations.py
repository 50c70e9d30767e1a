"""Where the chatbot keeps its files, per platform (platformdirs)."""

from pathlib import Path

import platformdirs

APP_NAME = "persona-chatbot"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only: chat history is personal data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
