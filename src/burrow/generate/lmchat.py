"""Chat with a pretrained LM: its own chat template when its tokenizer has one, else Dialogue-Prompted.

The passages the memory returns are placed before the templated conversation (the in-context
generator's window), so the template itself is never altered. A reply ends at the LM's end-of-turn
token (its eos, e.g. SmolLM2's ``<|im_end|>``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from burrow.errors import BurrowError
from burrow.generate.chat import ChatConfig, ChatSession
from burrow.generate.config import GenerationConfig
from burrow.generate.incontext import InContextGenerator

log = logging.getLogger(__name__)

SYSTEM = ("You are Burrow, a helpful and truthful assistant. Passages retrieved from a library may "
          "precede the conversation; use them when they are relevant, and say plainly when you do not know.")


@dataclass
class TemplateChatSession(ChatSession):
    """A conversation rendered with the tokenizer's chat template (``generator``: an in-context one);
    :meth:`reply` and :meth:`ask` are the Dialogue-Prompted session's, with this prompt and config."""

    system: str = SYSTEM

    def prompt_for(self, message: str) -> str:
        """The templated conversation (oldest turns dropped to fit) ending in the assistant's turn."""
        gen = self.generator
        if not isinstance(gen, InContextGenerator):
            raise BurrowError("a chat template needs a pretrained LM reading the memory (--lm)")
        tok = gen.lm.tokenizer
        # room for the reply too: the window keeps the last max_seq_len tokens of prompt + reply, so a prompt
        # that filled it lost its start (the system turn) as the reply grew, breaking the template mid-reply
        room = int(gen.config.max_seq_len)
        limit = room - min(self.config.max_new_tokens, room // 2)
        turns = list(self.turns)
        while True:
            messages = [{"role": "system", "content": self.system}]
            for user, assistant in turns:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            messages.append({"role": "user", "content": message.strip()})
            prompt = str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            if len(gen.encode(prompt)) <= limit:
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
                                k=cfg.k, seed=cfg.turn_seed(turn))


def chat_session(generator: Any, config: ChatConfig | None = None) -> ChatSession | TemplateChatSession:
    """The chat for ``generator``: the LM's own template when it has one, else Dialogue-Prompted."""
    config = config or ChatConfig()
    if isinstance(generator, InContextGenerator) and generator.chat_template:
        return TemplateChatSession(generator, config)
    return ChatSession(generator, config)
