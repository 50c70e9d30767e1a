"""A saved tokenizer folder opened with the `tokenizers` library and jinja2 alone.

`chatbot ask` on the fast path needs a tokenizer and nothing else of transformers, whose import
costs over a second of a cold start (and ~100 MB). transformers' fast tokenizers are this same
Rust `tokenizers.Tokenizer` underneath, and its chat templates are jinja2 rendered in a sandbox;
this class is that pair, with the part of the `PreTrainedTokenizer` interface this project calls
(`__call__` with `split_special_tokens`, `decode`, `apply_chat_template(tokenize=False)`, `get_vocab`, the special token ids).
Tests hold it equal to `AutoTokenizer` on the bundled model. `open` returns None for a folder it
cannot serve exactly (no tokenizer.json, a template that needs transformers' own extensions):
the caller then loads `AutoTokenizer`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

TEMPLATE_FILE = "chat_template.jinja"


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


class StandaloneTokenizer:
    def __init__(self, tokenizer, config: dict, chat_template: str | None):
        self._tokenizer = tokenizer
        self._config = config
        self.chat_template = chat_template
        self._template = None
        self._text_tokenizer = None
        self.special_tokens = {
            key: _token_text(config.get(key)) for key in ("bos_token", "eos_token", "pad_token", "unk_token")
        }
        self.eos_token_id = self._id_of(self.special_tokens["eos_token"])
        self.pad_token_id = self._id_of(self.special_tokens["pad_token"])
        self.bos_token_id = self._id_of(self.special_tokens["bos_token"])
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    @classmethod
    def open(cls, folder: str | Path) -> StandaloneTokenizer | None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception:  # noqa: BLE001 - unreadable or unknown to this tokenizers version: transformers' turn
            return None
        template_path = folder / TEMPLATE_FILE
        chat_template = template_path.read_text(encoding="utf-8") if template_path.is_file() else config.get("chat_template")
        if chat_template is not None and not isinstance(chat_template, str):
            return None  # several named templates: transformers chooses among them
        standalone = cls(tokenizer, config, chat_template)
        if chat_template is not None:
            try:
                standalone._compiled()
            except Exception:  # noqa: BLE001 - e.g. transformers' {% generation %} tag
                return None
        return standalone

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self._tokenizer.token_to_id(token)

    # -- what the project calls ------------------------------------------------------------------

    @property
    def backend_tokenizer(self):
        """The Rust tokenizer, as transformers' fast tokenizers name it."""
        return self._tokenizer

    def __call__(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> dict:
        # split_special_tokens: typed "<|im_end|>" is text, as in transformers (own copy: no shared flag)
        tokenizer = self._text_only() if split_special_tokens else self._tokenizer
        return {"input_ids": tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}

    def _text_only(self):
        if self._text_tokenizer is None:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(self._tokenizer.to_str())
            copy.encode_special_tokens = True
            self._text_tokenizer = copy
        return self._text_tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self(text, add_special_tokens)["input_ids"]

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return _clean_up_spaces(text) if clean else text

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def apply_chat_template(self, messages: list[dict], tokenize: bool = True, add_generation_prompt: bool = False, **kwargs):
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text = self._compiled().render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens, **kwargs
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _compiled(self):
        # As transformers compiles a chat template: a sandbox, trimmed blocks, loop controls.
        if self._template is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        return self._template


def _clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before punctuation and contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def read_json_config(path: Path, **extra) -> SimpleNamespace | None:
    """A saved config (config.json, generation_config.json) as attributes, without transformers."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return SimpleNamespace(**{**values, **extra}) if isinstance(values, dict) else None
