"""Command-palette entries (Ctrl+P): switch persona, and every action of the chat screen."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

ACTIONS = (
    ("New conversation", "new_conversation", "Start an empty conversation"),
    ("Regenerate reply", "regenerate", "A new reply beside the selected one"),
    ("Edit and resend", "edit", "Edit the selected (or last) message: a new branch"),
    ("Copy message", "copy_message", "The selected (or last) message, to the clipboard"),
    ("Copy code block", "copy_code", "The last code block of the selected (or last) reply"),
    ("Toggle Markdown / raw text", "toggle_markdown", "Replies rendered, or their text as written"),
    ("Settings…", "settings", "Persona, sampling, context budget, memory of this conversation"),
    ("Export conversation…", "export", "Markdown or JSON"),
    ("Replay conversation", "replay", "Play it back at its recorded speed"),
    ("Rename conversation…", "rename", "Give the open conversation a title"),
    ("Delete conversation…", "delete", "Asks first"),
    ("Search conversations", "search", "Search every saved message"),
    ("Toggle sidebar", "toggle_sidebar", "Saved conversations"),
    ("Switch persona…", "pick_persona", "The persona picker"),
    ("Keys (help)", "help", "Every key binding"),
)


class ChatCommands(Provider):
    def _commands(self):
        screen = self.app.get_screen("chat")
        controller = screen.controller  # None a moment after the first frame: no settings read yet
        personas = controller.personas if controller is not None else {}
        for name, installed in sorted(personas.items()):
            title = installed.persona.title
            yield (
                f"Persona: {title}",
                partial(screen.switch_persona, name),
                installed.persona.description or f"Answer as {title} from now on",
            )
        for label, action, help_text in ACTIONS:
            yield label, partial(screen.run_action, action), help_text
        if controller is None:
            return
        from chatbot.tui.model_switch import model_names, switch_model

        if getattr(self, "_models", None) is None:  # once per palette opening, not per keystroke
            self._models = model_names(controller.settings)
        for name in self._models:  # `chatbot model list`'s names
            yield f"Model: {name}", partial(switch_model, screen, name), "Load this model behind the screen"

    async def discover(self) -> Hits:
        for label, callback, help_text in self._commands():
            yield DiscoveryHit(Content(label), callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, callback, help_text in self._commands():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), callback, help=help_text)
