"""Chat: a dialogue preamble in the structure of Dialogue-Prompted Gopher, then the live turns.

The structure follows the paper (a description of a respectful, polite, inclusive, truthful
assistant, a short scripted conversation, then the live turns; nucleus sampling with p = 0.8); the
wording is ours and the assistant is called Burrow. A reply ends at the model's next "User:" line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from burrow.errors import BurrowError
from burrow.generate.config import ASSISTANT, USER, ChatConfig, GenerationConfig
from burrow.generate.generator import DoneEvent, Event, GenerationResult, Generator

if TYPE_CHECKING:
    from burrow.generate.incontext import InContextGenerator

log = logging.getLogger(__name__)


@dataclass
class ChatSession:
    """A conversation: the preamble plus the turns so far; :meth:`reply` answers one message."""

    generator: Generator | InContextGenerator
    config: ChatConfig = field(default_factory=ChatConfig)
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user message, assistant reply)

    def __post_init__(self) -> None:
        try:  # a preamble that leaves no room for any message is said once, at the start
            self.prompt_for("")
        except BurrowError:
            raise BurrowError(f"the chat preamble leaves no room for a message in this model's context "
                              f"({int(self.generator.config.max_seq_len)} tokens); use a model with a longer "
                              "max_seq_len (or --lm)") from None

    def prompt_for(self, message: str) -> str:
        """Preamble + the most recent turns that fit the model + the new message, ending in "Burrow:"."""
        tail = f"{USER}: {message.strip()}\n{ASSISTANT}:"
        # a burrow model reads its prompt after a one-chunk document start (generator.py)
        head = int(self.generator.config.chunk_size) if isinstance(self.generator, Generator) else 0
        limit = int(self.generator.config.max_seq_len) - 1 - head - min(self.config.max_new_tokens, 32)
        turns = list(self.turns)
        while True:
            history = "".join(f"{USER}: {u}\n{ASSISTANT}: {a}\n" for u, a in turns)
            prompt = self.config.preamble + history + tail
            if len(self.generator.tokenizer.encode(prompt)) <= limit:
                return prompt
            if not turns:
                raise BurrowError("the preamble and this message do not fit the model's context; "
                                  "write a shorter message or use a model with a longer max_seq_len")
            turns.pop(0)  # forget the oldest turn first
            log.debug("dropped the oldest chat turn to fit the context")

    def reply(self, message: str) -> Iterator[Event]:
        """Stream the reply to ``message``; the turn is recorded when the reply is complete."""
        prompt = self.prompt_for(message)
        for event in self.generator.stream(prompt, self.generation(len(self.turns))):
            if isinstance(event, DoneEvent):
                self.turns.append((message.strip(), event.result.text.strip()))
            yield event

    def generation(self, turn: int) -> GenerationConfig:
        """Reply ``turn``'s generation config (the chat config's)."""
        return self.config.generation(turn)

    def ask(self, message: str) -> GenerationResult:
        """The whole reply to ``message`` (not streamed)."""
        for event in self.reply(message):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("chat reply ended without a result")  # pragma: no cover
