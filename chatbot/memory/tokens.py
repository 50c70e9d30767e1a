"""Token ids for the pieces of a render: the template's markers may be special tokens, content never.

transformers' `split_special_tokens=True` flips a flag on the tokenizer it shares with every
other caller (the UI's preview and a reply's build run on different threads), so content is
encoded by a private copy of the Rust tokenizer that never matches special tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable


def template_encoder(tokenizer) -> Callable[[str], list[int]]:
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


# One private copy per tokenizer and process: making one takes ~0.2 s (a 49k vocabulary).
_PRIVATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def content_encoder(tokenizer) -> Callable[[str], list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python tokenizer: per call, nothing shared to flip
        return lambda text: tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    # Text with no special token's text in it has nothing for the shared tokenizer to split out:
    # it encodes to the private copy's ids, so the copy (~40 MB of RSS with what parsing it
    # leaves behind, for a 49k vocabulary) is made only for text that needs it. A normalizer could
    # make a special token match text that does not contain it: then always the copy.
    specials = [t.content for t in backend.get_added_tokens_decoder().values() if t.special and t.content]
    shared_is_exact = backend.normalizer is None

    def encode(text: str) -> list[int]:
        if shared_is_exact and not any(special in text for special in specials):
            return backend.encode(text, add_special_tokens=False).ids
        return _private(tokenizer, backend).encode(text, add_special_tokens=False).ids

    return encode


def _private(tokenizer, backend):
    private = _PRIVATE.get(tokenizer)
    if private is None:
        from tokenizers import Tokenizer

        private = Tokenizer.from_str(backend.to_str())
        private.encode_special_tokens = True
        _PRIVATE[tokenizer] = private
    return private


def special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        ids |= {i for i, token in backend.get_added_tokens_decoder().items() if token.special}
    return ids


def special_texts(tokenizer) -> list[str]:
    """The text of every special token, longest first (for showing look-alikes in content)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    texts = {t.content for t in backend.get_added_tokens_decoder().values() if t.special} if backend else set()
    texts |= set(getattr(tokenizer, "all_special_tokens", None) or [])
    return sorted((t for t in texts if t), key=len, reverse=True)
