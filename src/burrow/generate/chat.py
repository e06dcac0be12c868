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
from burrow.generate.config import GenerationConfig
from burrow.generate.generator import DoneEvent, Event, GenerationResult, Generator
from burrow.memory import DEFAULT_K

if TYPE_CHECKING:
    from burrow.generate.incontext import InContextGenerator

log = logging.getLogger(__name__)

ASSISTANT = "Burrow"
USER = "User"

PREAMBLE = """\
The following is a conversation between a person, the User, and an AI assistant called Burrow. \
Burrow is respectful, polite and inclusive, and treats every person and group fairly. Burrow is \
truthful: it answers from what it knows and from the passages it retrieves, it says plainly when it \
does not know something, and it never makes up facts or sources. Burrow keeps its answers short and \
clear, and it declines to help with anything that could hurt someone.

User: Hello Burrow, what can you do?
Burrow: Hello! I can answer questions, explain ideas and point you to the texts I have read. \
If I do not know something, I will say so.
User: What is the capital of France?
Burrow: The capital of France is Paris.
User: Who will win next year's chess world championship?
Burrow: I don't know. Nobody can know that before the games are played.
"""


@dataclass
class ChatConfig:
    """How a chat samples and what it starts from."""

    # The dialogue preamble (description of the assistant + scripted exchange), ending in a newline.
    preamble: str = PREAMBLE
    # Nucleus sampling p (Dialogue-Prompted Gopher: 0.8).
    top_p: float = 0.8
    # Sampling temperature.
    temperature: float = 1.0
    # Most tokens per reply.
    max_new_tokens: int = 128
    # Neighbours retrieved per chunk.
    k: int = DEFAULT_K
    # Seed of the first reply (reply i uses seed + i); None: a fresh seed per reply.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.preamble.endswith("\n"):
            self.preamble += "\n"

    def generation(self, turn: int) -> GenerationConfig:
        """The generation config of reply ``turn``: stops at the next "User:" line."""
        seed = None if self.seed is None else self.seed + turn
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, k=self.k, seed=seed, stop=(f"\n{USER}:",))


@dataclass
class ChatSession:
    """A conversation: the preamble plus the turns so far; :meth:`reply` answers one message."""

    generator: Generator | InContextGenerator
    config: ChatConfig = field(default_factory=ChatConfig)
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user message, assistant reply)

    def prompt_for(self, message: str) -> str:
        """Preamble + the most recent turns that fit the model + the new message, ending in "Burrow:"."""
        tail = f"{USER}: {message.strip()}\n{ASSISTANT}:"
        limit = int(self.generator.config.max_seq_len) - 1 - min(self.config.max_new_tokens, 32)
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
