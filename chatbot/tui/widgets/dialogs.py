"""Modal dialogs: confirm, a one-line prompt (rename), the persona picker, export, help."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from chatbot.tui.keys import KEYS, shown_keys
from chatbot.tui.widgets.text import clean, color_style, literal

CLOSE = [Binding("escape", "dismiss_none", "Close", show=False)]


class Dialog(ModalScreen):
    BINDINGS = CLOSE

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ConfirmDialog(Dialog):
    def __init__(self, question: str, yes: str = "Delete"):
        super().__init__(classes="dialog-screen")
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(literal(self.question), markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_dismiss_none(self) -> None:
        self.dismiss(False)


class TextPrompt(Dialog):
    def __init__(self, question: str, value: str = ""):
        super().__init__(classes="dialog-screen")
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal(self.question), markup=False)
            yield Input(self.value, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class PersonaPicker(Dialog):
    """Every installed persona, in its colour, with its description."""

    def __init__(self, personas: dict, current: str):
        super().__init__(classes="dialog-screen")
        self.personas, self.current = personas, current

    def compose(self) -> ComposeResult:
        options = []
        for name, installed in sorted(self.personas.items()):
            p = installed.persona
            text = Text(end="")
            text.append(clean(p.title), style=color_style(p.color))
            kind = f"({p.kind.replace('_', ' ')})"
            if not p.title.endswith(kind):  # `persona distill` names its result "X (soft prompt)"
                text.append(f"  {kind}", style="dim")
            if name == self.current:
                text.append("  current", style="italic")
            if p.description:
                text.append("\n")
                text.append(literal(p.description, "dim"))
            options.append(Option(text, id=name))
        with Vertical(classes="dialog"):
            yield Label("Switch persona (Enter picks, Esc closes)")
            yield OptionList(*options, id="personas")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        index = options.get_option_index(self.current) if self.current in self.personas else 0
        options.highlighted = index

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ExportDialog(Dialog):
    """Format and file; answers (format, path) or None."""

    def __init__(self, default_stem: str, directory: Path):
        super().__init__(classes="dialog-screen")
        self.default_stem, self.directory = default_stem, directory

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Export the open conversation")
            with RadioSet(id="format"):
                yield RadioButton("Markdown (the branch shown, for reading)", value=True, id="md")
                yield RadioButton("JSON (the whole tree, lossless, re-importable)", id="json")
            yield Input(str(self.directory / f"{self.default_stem}.md"), id="path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export")
                yield Button("Cancel", id="cancel")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        path = self.query_one("#path", Input)
        suffix = ".json" if event.pressed.id == "json" else ".md"
        current = Path(path.value)
        if current.suffix in (".md", ".json"):
            path.value = str(current.with_suffix(suffix))

    def _answer(self) -> tuple[str, Path]:
        pressed = self.query_one("#format", RadioSet).pressed_button
        fmt = "json" if pressed is not None and pressed.id == "json" else "md"
        return fmt, Path(self.query_one("#path", Input).value).expanduser()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(self._answer())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self._answer() if event.button.id == "export" else None)


AREAS = {
    "composer": "Typing",
    "chat": "Chat",
    "app": "Anywhere",
    "sidebar": "Conversation list (focused)",
    "replay": "Replay",
}


class HelpScreen(Dialog):
    """Every binding, with the keys in force now (the config file's or the defaults)."""

    BINDINGS = [*CLOSE, Binding("f1,q", "dismiss_none", "Close", show=False)]

    def __init__(self, keymap: dict[str, str], config_path: Path | None):
        super().__init__(classes="dialog-screen")
        self.keymap, self.config_path = keymap, config_path

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, show_header=True, header_style="bold")
        # The keys wrap at their commas, so a narrow terminal still leaves room for what they do.
        table.add_column("Keys", max_width=20)
        table.add_column("Does", ratio=1)
        table.add_column("Id (config)", style="dim", no_wrap=True)
        for area, heading in AREAS.items():
            table.add_row(Text(heading, style="bold underline"), "", "")
            for key in KEYS:
                if key.area == area:
                    table.add_row(Text(shown_keys(key, self.keymap)), Text(key.description), Text(key.id))
        self.table = table
        where = str(self.config_path) if self.config_path else "(none)"
        with Vertical(classes="dialog help"):
            yield Label("Keys  (Esc or F1 closes)")
            with VerticalScroll():
                yield Static(table, markup=False)
                yield Static(
                    Text(
                        f"Change a key in {where}, e.g.\n\n[keys]\nregenerate = \"ctrl+g\"\n\n"
                        "The theme you choose (Ctrl+T or the command palette) is saved there too.",
                        style="dim",
                    ),
                    markup=False,
                )
