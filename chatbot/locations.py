"""Where the chatbot keeps its files, per platform (platformdirs)."""

import sys
from pathlib import Path

import platformdirs

APP_NAME = "persona-chatbot"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def shipped_folder(name: str) -> Path:
    """A folder the project ships beside the package (`personas/`, `migrations/`): the checkout's
    own in a source tree, else the copy pyproject's data-files put in the environment's share/."""
    checkout = Path(__file__).resolve().parents[1] / name
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / APP_NAME / name


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only: chat history is personal data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
