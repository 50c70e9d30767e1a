"""Every key binding of the UI in one table: the screens build their `BINDINGS` from it, the help
screen lists it, and the config file overrides it by id (`[keys]` in tui.toml)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    id: str
    keys: str  # default keys, comma-separated (Textual key names)
    action: str
    description: str
    area: str  # where it works: chat, composer, sidebar, replay
    show: bool = True  # in the footer
    priority: bool = True
    short: str = ""  # the footer's label


KEYS: tuple[Key, ...] = (
    Key("send", "enter", "submit", "Send the message", "composer", show=False),
    Key("newline", "ctrl+j,shift+enter,alt+enter", "newline", "New line in the message", "composer", show=False),
    Key("cancel", "escape", "cancel", "Stop the reply (kept, marked interrupted) / leave edit", "chat", priority=False, short="Stop"),
    Key("regenerate", "ctrl+r", "regenerate", "Regenerate the selected reply (a sibling)", "chat", short="Regenerate"),
    Key("sibling_prev", "alt+left", "sibling(-1)", "Previous sibling of the selected message", "chat", show=False),
    Key("sibling_next", "alt+right", "sibling(1)", "Next sibling of the selected message", "chat", show=False),
    Key("select_prev", "alt+up", "select(-1)", "Select the message above", "chat", show=False),
    Key("select_next", "alt+down", "select(1)", "Select the message below", "chat", show=False),
    Key("edit", "f4", "edit", "Edit the selected (or last) message and resend: a new branch", "chat", short="Edit"),
    Key("persona", "f2", "pick_persona", "Switch persona", "chat", short="Persona"),
    Key("sidebar", "ctrl+b", "toggle_sidebar", "Show/hide saved conversations", "chat", short="Chats"),
    Key("search", "ctrl+f", "search", "Search saved conversations", "chat", show=False),
    Key("new", "ctrl+n", "new_conversation", "New conversation", "chat", short="New"),
    Key("rename", "f3", "rename", "Rename the open conversation", "chat", show=False),
    Key("delete", "f8", "delete", "Delete the open conversation (asks first)", "chat", show=False),
    Key("export", "ctrl+s", "export", "Export the conversation (Markdown/JSON)", "chat", show=False),
    Key("copy", "f5", "copy_message", "Copy the selected (or last) message to the clipboard", "chat", show=False),
    Key("replay", "f6", "replay", "Replay the conversation", "chat", short="Replay"),
    Key("rate_good", "alt+g", "rate('good')", "Rate the selected (or last) reply good (again: clear)", "chat", show=False),
    Key("rate_bad", "alt+b", "rate('bad')", "Rate the selected (or last) reply bad (again: clear)", "chat", show=False),
    Key("recalled", "f10", "show_recalled", "What memory recalled for the selected (or last) reply", "chat", show=False),
    Key("markdown", "f7", "toggle_markdown", "Replies as Markdown / raw text (remembered)", "chat", show=False),
    Key("copy_code", "ctrl+y", "copy_code", "Copy the last code block of the selected (or last) reply", "chat", show=False),
    Key("settings", "f9", "settings", "Settings of this conversation (sampling, budget, memory)", "chat", show=False),
    Key("theme", "ctrl+t", "pick_theme", "Choose a theme (remembered)", "chat", show=False),
    Key("help", "f1", "help", "This help", "chat", short="Help"),
    Key("palette", "ctrl+p", "command_palette", "Command palette", "app", show=False),
    Key("quit", "ctrl+q", "quit", "Quit", "app", show=False),
    Key("sidebar_open", "enter", "open", "Open the conversation", "sidebar", show=False, priority=False),
    Key("sidebar_rename", "r", "rename", "Rename it", "sidebar", show=False, priority=False),
    Key("sidebar_delete", "delete,d", "delete", "Delete it (asks first)", "sidebar", show=False, priority=False),
    Key("replay_pause", "space", "toggle_pause", "Pause / resume", "replay", priority=False, short="Pause"),
    Key("replay_skip", "right,s", "skip", "Skip to the end of this reply", "replay", priority=False, short="Skip"),
    Key("replay_faster", "plus,equals_sign", "faster", "Faster", "replay", priority=False, short="Faster"),
    Key("replay_slower", "minus", "slower", "Slower", "replay", priority=False, short="Slower"),
    Key("replay_exit", "escape,q", "leave", "Leave the replay", "replay", priority=False, short="Leave"),
)

BY_ID = {k.id: k for k in KEYS}


def bindings(area: str) -> list[Binding]:
    return [
        Binding(k.keys, k.action, k.short or k.description, show=k.show, priority=k.priority, id=k.id,
                tooltip=k.description)
        for k in KEYS
        if k.area == area
    ]


def shown_keys(key: Key, keymap: dict[str, str]) -> str:
    """The keys that trigger a binding now (the config file's, else the default), for people."""
    keys = keymap.get(key.id, key.keys)
    return ", ".join(k.strip() for k in keys.split(",") if k.strip())
