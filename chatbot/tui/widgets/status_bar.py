"""The bottom line: model (or its loading progress), persona, context used / budget and turns
dropped, time to first token and tokens/s of the last reply."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from chatbot.tui.widgets.text import clean, color_style


class StatusBar(Static):
    model: reactive[str] = reactive("loading model…")
    model_loading: reactive[bool] = reactive(True)
    persona: reactive[str] = reactive("")
    persona_color: reactive[str] = reactive("")
    context: reactive[tuple[int, int, int] | None] = reactive(None)  # tokens, budget, dropped turns
    speed: reactive[tuple[float, float] | None] = reactive(None)  # ttft ms, tokens/s
    activity: reactive[str] = reactive("")
    recalled: reactive[int] = reactive(0)  # passages memory recalled for the last reply
    tuning: reactive[str] = reactive("")  # the conversation's own settings, if any (settings panel)

    def __init__(self, **kwargs):
        super().__init__("", markup=False, **kwargs)

    def render(self) -> Text:
        """The fullest form that fits the width. Narrower, the labels go first, then the last
        reply's speed, then the model's name, then the conversation's own settings; the context
        figures stay (in the last resort they come first, so only what follows them is cut)."""
        width = self.content_size.width
        forms = [(True, True, True, True), (False, True, True, True), (False, False, True, True),
                 (False, False, False, True), (False, False, False, False)]
        for labels, speed, model, tuning in forms:
            bar = self._line(labels, speed, model, tuning)
            if bar.cell_len <= width:
                return bar
        return self._line(False, False, False, False, context_first=True)

    def _line(self, labels: bool, speed: bool, model: bool, tuning: bool = True, context_first: bool = False) -> Text:
        sections: list[Text] = []
        if model:
            section = _labelled("model ", labels)
            section.append(clean(self.model), style="italic" if self.model_loading else "bold")
            sections.append(section)
        section = _labelled("persona ", labels)
        section.append(clean(self.persona), style=color_style(self.persona_color))
        sections.append(section)
        if self.tuning and tuning:
            section = _labelled("settings ", labels)
            section.append(clean(self.tuning), style="cyan")
            sections.append(section)
        context = self._context_section(labels)
        if context_first:
            sections.insert(0, context)
        else:
            sections.append(context)
        if speed:
            section = _labelled("last reply ", labels)
            if self.speed is None:
                section.append("–")
            else:
                ttft, rate = self.speed
                section.append(f"TTFT {ttft:.0f} ms · {rate:.1f} tok/s")
            sections.append(section)
        if self.activity:
            sections.append(Text(clean(self.activity), style="italic"))
        bar = Text(no_wrap=True, overflow="ellipsis", end="")
        for i, section in enumerate(sections):
            if i:
                bar.append("  │  ", style="dim")
            bar.append_text(section)
        return bar

    def _context_section(self, labels: bool) -> Text:
        section = _labelled("context ", labels)
        if self.context is None:
            section.append("–")
            return section
        used, budget, dropped = self.context
        section.append(f"{used}/{budget}" if labels else f"{used}/{budget} tokens")
        if dropped:
            turns = f"{dropped} turn{'s' if dropped != 1 else ''}"
            section.append(f" ({turns} dropped)", style="yellow")
        if self.recalled:
            section.append(f" · recalled {self.recalled}", style="cyan")
        return section


def _labelled(label: str, labels: bool) -> Text:
    """A section that starts with its label (dim, in a span of its own) when labels are shown."""
    section = Text()
    if labels:
        section.append(label, style="dim")
    return section
