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

    def __init__(self, **kwargs):
        super().__init__("", markup=False, **kwargs)

    def render(self) -> Text:
        bar = Text(no_wrap=True, overflow="ellipsis", end="")
        bar.append("model ", style="dim")
        bar.append(clean(self.model), style="italic" if self.model_loading else "bold")
        bar.append("  │  persona ", style="dim")
        bar.append(clean(self.persona), style=color_style(self.persona_color))
        bar.append("  │  context ", style="dim")
        if self.context is None:
            bar.append("–")
        else:
            used, budget, dropped = self.context
            bar.append(f"{used}/{budget}")
            if dropped:
                bar.append(f" ({dropped} turn{'s' if dropped != 1 else ''} dropped)", style="yellow")
        bar.append("  │  last reply ", style="dim")
        if self.speed is None:
            bar.append("–")
        else:
            ttft, rate = self.speed
            bar.append(f"TTFT {ttft:.0f} ms · {rate:.1f} tok/s")
        if self.activity:
            bar.append("  │  ", style="dim")
            bar.append(clean(self.activity), style="italic")
        return bar
