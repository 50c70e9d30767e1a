"""The settings panel (F9, or `Settings…` in the palette): the open conversation's persona,
sampling, context budget and memory scope, and the model (for the whole UI, as the palette's
`Model:` commands). An empty field follows the persona and the global settings (its placeholder
says what that is now). Answers (persona name, values, model name) or None."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from chatbot.conversation_settings import FIELDS, MEMORY_SCOPES, parse
from chatbot.tui.widgets.dialogs import CLOSE, Dialog
from chatbot.tui.widgets.text import clean, literal


class SettingsPanel(Dialog):
    BINDINGS = [*CLOSE, Binding("ctrl+s", "save", "Save", show=False)]

    def __init__(
        self,
        personas: dict,
        persona: str,
        values: dict[str, Any],
        defaults: dict[str, Any],
        check: Callable[[dict[str, Any]], dict[str, Any]],
        model: str | None = None,
        models: list[str] = (),
    ):
        super().__init__(classes="dialog-screen")
        self.personas, self.persona = personas, persona
        self.values, self.defaults, self.check = values, defaults, check
        self.model, self.models = model, list(models)

    def compose(self) -> ComposeResult:
        personas = [(clean(p.persona.title), name) for name, p in sorted(self.personas.items())]
        with Vertical(classes="dialog settings"):
            yield Label("This conversation, from the next reply on · Enter saves, Esc closes")
            with VerticalScroll():
                with Horizontal(classes="setting"):
                    yield Label("Persona", classes="name")
                    yield Select(personas, value=self.persona, allow_blank=False, id="persona", compact=True)
                for field in FIELDS:
                    with Horizontal(classes="setting"):
                        yield Label(field.label, classes="name")
                        yield self._editor(field)
                if self.model is not None:
                    names = [self.model] + [m for m in self.models if m != self.model]
                    with Horizontal(classes="setting"):
                        yield Label("Model (the whole UI's)", classes="name")
                        yield Select([(clean(m), m) for m in names], value=self.model, allow_blank=False,
                                     id="model", compact=True)
            yield Static("", id="settings-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def _editor(self, field):
        default = self.defaults.get(field.key)
        shown_default = "" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
        if field.key == "memory":
            choices = [(f"default ({shown_default or 'the global setting'})", "")] + [(s, s) for s in MEMORY_SCOPES]
            return Select(choices, value=self.values.get("memory", ""), allow_blank=False, id=field.key, compact=True)
        value = self.values.get(field.key)
        return Input(
            "" if value is None else str(value), placeholder=f"default {shown_default}", id=field.key,
            type="integer" if field.kind is int else "text", compact=True, select_on_focus=False,
        )

    def on_mount(self) -> None:
        self.query_one("#temperature", Input).focus()

    def _answer(self) -> tuple[str, dict[str, Any], str | None] | None:
        raw = {f.key: self.query_one(f"#{f.key}", Input).value for f in FIELDS if f.kind is not str}
        error = self.query_one("#settings-error", Static)
        try:
            values = parse(raw)
            memory = self.query_one("#memory", Select).value
            if memory:
                values["memory"] = memory
            values = self.check(values)
        except ValueError as exc:
            error.update(literal(str(exc), "bold red"))
            return None
        model = str(self.query_one("#model", Select).value) if self.model is not None else None
        return str(self.query_one("#persona", Select).value), values, model

    def action_save(self) -> None:
        answer = self._answer()
        if answer is not None:
            self.dismiss(answer)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)
