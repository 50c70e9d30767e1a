"""Where the chatbot keeps its files, per platform (platformdirs)."""

import os
import sys
from pathlib import Path

import platformdirs

from chatbot.errors import UserError

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
    """Create a directory (and any missing parent) readable by its owner only, whatever the umask:
    chat history is personal data. One that already exists is left as it is. A path that cannot be
    a folder (under a file, under /proc, no permission) is a UserError naming it."""
    missing = []
    probe = path
    try:
        while not probe.is_dir():
            if probe.exists() or probe.is_symlink():
                raise UserError(f"cannot create the folder {path}: {probe} is not a folder")
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
    except OSError as exc:  # e.g. a parent this user may not look into
        raise UserError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise UserError(f"cannot create the folder {path}: {folder} is not a folder") from None
            continue  # made meanwhile by another process: theirs to set
        except OSError as exc:
            raise UserError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
        os.chmod(folder, 0o700)  # mkdir's mode is filtered through the umask (umask 0277 would give 0500)
    return path


def write_private_text(path: Path, text: str) -> Path:
    """Write a file in the data dir atomically (a temporary file, then a rename), mode 0600 whatever
    the umask; its folder is created private if missing."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # an old temporary file keeps its mode: set it
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path
