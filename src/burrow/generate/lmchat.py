"""Chat with a pretrained LM: its own chat template when its tokenizer has one, else Dialogue-Prompted.

The passages the memory returns are placed before the templated conversation (the in-context
generator's window), so the template itself is never altered. A reply ends at the LM's end-of-turn
token (its eos, e.g. SmolLM2's ``<|im_end|>``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from burrow.errors import BurrowError
from burrow.generate.chat import ChatConfig, ChatSession
from burrow.generate.config import GenerationConfig
from burrow.generate.generator import DoneEvent, Event, GenerationResult
from burrow.generate.incontext import InContextGenerator

log = logging.getLogger(__name__)

SYSTEM = ("You are Burrow, a helpful and truthful assistant. Passages retrieved from a library may "
          "precede the conversation; use them when they are relevant, and say plainly when you do not know.")


@dataclass
class TemplateChatSession:
    """A conversation rendered with the tokenizer's chat template; :meth:`reply` answers one message."""

    generator: InContextGenerator
    config: ChatConfig = field(default_factory=ChatConfig)
    system: str = SYSTEM
    turns: list[tuple[str, str]] = field(default_factory=list)

    def prompt_for(self, message: str) -> str:
        """The templated conversation (oldest turns dropped to fit) ending in the assistant's turn."""
        tok = self.generator.lm.tokenizer
        limit = int(self.generator.config.max_seq_len)
        turns = list(self.turns)
        while True:
            messages = [{"role": "system", "content": self.system}]
            for user, assistant in turns:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            messages.append({"role": "user", "content": message.strip()})
            prompt = str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            if len(self.generator.encode(prompt)) <= limit:
                return prompt
            if not turns:
                raise BurrowError("this message does not fit the LM's window after the retrieved passages; "
                                  "write a shorter message")
            turns.pop(0)
            log.debug("dropped the oldest chat turn to fit the window")

    def generation(self, turn: int) -> GenerationConfig:
        """Reply ``turn``'s config: the chat's sampling; the reply ends at the end-of-turn token."""
        cfg = self.config
        return GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                k=cfg.k, seed=None if cfg.seed is None else cfg.seed + turn)

    def reply(self, message: str) -> Iterator[Event]:
        """Stream the reply to ``message``; the turn is recorded when the reply is complete."""
        for event in self.generator.stream(self.prompt_for(message), self.generation(len(self.turns))):
            if isinstance(event, DoneEvent):
                self.turns.append((message.strip(), event.result.text.strip()))
            yield event

    def ask(self, message: str) -> GenerationResult:
        """The whole reply to ``message``."""
        for event in self.reply(message):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("chat reply ended without a result")  # pragma: no cover


def chat_session(generator: Any, config: ChatConfig | None = None) -> ChatSession | TemplateChatSession:
    """The chat for ``generator``: the LM's own template when it has one, else Dialogue-Prompted."""
    config = config or ChatConfig()
    if isinstance(generator, InContextGenerator) and generator.chat_template:
        return TemplateChatSession(generator, config)
    return ChatSession(generator, config)
