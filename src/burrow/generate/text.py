"""Turning generated token ids into text as they arrive: incremental detokenization and stop strings.

Decoding each new token alone is wrong for two reasons: a tokenizer may render a token differently
at the start of a string (SentencePiece-style leading spaces), and byte-fallback tokens of one
character arrive over several steps. So each step decodes a short window that starts a few tokens
back and emits only the growth, holding text back while it ends in an incomplete character (the
approach of vLLM's incremental detokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence

from burrow.data.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
WINDOW = 5  # tokens of left context decoded with each new token


class Detokenizer:
    """Text of a growing token sequence, and the character offset where each generated token starts."""

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self._ids = [int(t) for t in context]
        self._prefix = max(0, len(self._ids) - WINDOW)  # start of the decoded window
        self._read = len(self._ids)  # tokens whose text has been emitted
        self.text = ""  # generated text so far (the context is not part of it)
        self.starts: list[int] = []  # per generated token: char offset in ``text`` where it starts

    def push(self, token: int) -> str:
        """Add one token; return the text it completes (possibly empty while a character is partial)."""
        self.starts.append(len(self.text))
        self._ids.append(int(token))
        before = self.tokenizer.decode(self._ids[self._prefix:self._read])
        after = self.tokenizer.decode(self._ids[self._prefix:])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        delta = after[len(before):]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Emit whatever is held back (an incomplete character decodes to U+FFFD) at the end."""
        if self._read == len(self._ids):
            return ""
        before = self.tokenizer.decode(self._ids[self._prefix:self._read])
        after = self.tokenizer.decode(self._ids[self._prefix:])
        delta = after[len(before):]
        self._read = len(self._ids)
        self.text += delta
        return delta

    def end_of(self, token_index: int) -> int:
        """Char offset where generated token ``token_index`` ends (the next one's start, or the end)."""
        return self.starts[token_index + 1] if token_index + 1 < len(self.starts) else len(self.text)


class StopMatcher:
    """Holds back streamed text that could still become a stop string; finds the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.text = ""  # everything seen
        self.released = 0  # chars of ``text`` already released to the caller
        self.cut: int | None = None  # where the text ends when a stop string was found

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the text now safe to show (never any part of a stop string)."""
        if self.cut is not None:
            return ""
        self.text += delta
        hits = [i for i in (self.text.find(s, max(0, self.released - len(s))) for s in self.stops) if i >= 0]
        if hits:
            self.cut = min(hits)
            return self._release(self.cut)
        return self._release(len(self.text) - self._held_back())

    def finish(self) -> str:
        """Release the rest at the end of generation (held text that never became a stop string)."""
        return self._release(self.cut if self.cut is not None else len(self.text))

    @property
    def final_text(self) -> str:
        """The text up to the stop string (all of it when none was found)."""
        return self.text[:self.cut] if self.cut is not None else self.text

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _release(self, upto: int) -> str:
        upto = max(upto, self.released)
        out = self.text[self.released:upto]
        self.released = upto
        return out
