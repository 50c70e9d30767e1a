"""Incremental detokenization: turn a growing list of token ids into text deltas without ever
emitting half a character.

Byte-level BPE splits one emoji or CJK character over several tokens; decoding them one at a time
gives U+FFFD. We decode a short window (a few tokens of left context plus the new ones), emit only
when the new text does not end in an incomplete character, and keep the context so tokenizers that
strip or merge spaces at a boundary still decode as they would in one piece.
"""

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, context: int = 5):
        self._tokenizer = tokenizer
        self._context = context
        self.ids: list[int] = []
        self._prefix_offset = 0  # start of the left-context window
        self._read_offset = 0  # tokens whose text has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now final (possibly empty)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        after = self._decode(self.ids[self._prefix_offset :])
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            return ""  # an incomplete multi-byte character: wait for the next token
        delta = after[len(before) :]
        self._prefix_offset = max(self._read_offset, len(self.ids) - self._context)
        self._read_offset = len(self.ids)
        return delta

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character stays as U+FFFD)."""
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        after = self._decode(self.ids[self._prefix_offset :])
        self._read_offset = len(self.ids)
        self._prefix_offset = self._read_offset
        return after[len(before) :]

    def text(self) -> str:
        return self._decode(self.ids)
