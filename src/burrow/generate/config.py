"""How to generate: sampling, length, retrieval. One typed config, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from burrow.defaults import DEFAULT_K
from burrow.errors import BurrowError
from burrow.fieldtypes import check_seed


@dataclass
class GenerationConfig:
    """Options of one generation (prompt → continuation)."""

    # Most tokens to generate; generation also stops at EOS, a stop string or the model's max_seq_len.
    max_new_tokens: int = 128
    # Softmax temperature; 0 means greedy.
    temperature: float = 1.0
    # Sample only among the k most likely tokens; 0 turns top-k off.
    top_k: int = 0
    # Nucleus sampling: the smallest set of tokens whose probability reaches p; 1.0 turns it off. 0.9, as
    # the web page: plain sampling (1.0) from the long tail makes even a pretrained LM's text incoherent.
    top_p: float = 0.9
    # Always take the most likely token (ignores temperature, top-k, top-p and seed).
    greedy: bool = False
    # Seed of the sampler; None draws one (reported in the result, so any run can be repeated).
    seed: int | None = None
    # Neighbours retrieved per chunk (the paper trains with 2).
    k: int = DEFAULT_K
    # RETRO[ON]; False runs a RETRO model without retrieval (RETRO[OFF]). Ignored for baselines.
    retrieval: bool = True
    # Strings that end generation; the text is cut before the first one (chat: "\nUser:").
    stop: tuple[str, ...] = ()
    # Decode with the KV cache; False recomputes the whole sequence each step (slow; for checking).
    kv_cache: bool = True
    # Shortest copied span (in tokens) reported and highlighted; shorter shared runs say nothing.
    min_copy: int = 4

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        if self.max_new_tokens < 1:
            raise BurrowError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature < float("inf"):  # NaN too
            raise BurrowError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {self.temperature}")
        if self.seed is not None:
            check_seed(self.seed)
        if self.top_k < 0:
            raise BurrowError(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise BurrowError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.k <= 100:
            raise BurrowError(f"k (neighbours per chunk) must be in [1, 100], got {self.k}")
        if self.min_copy < 1:
            raise BurrowError(f"min_copy must be ≥ 1, got {self.min_copy}")
        if any(not s for s in self.stop):
            raise BurrowError("stop strings must not be empty")

    @property
    def is_greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.greedy or self.temperature == 0.0


# Chat (burrow.generate.chat): the structure of Dialogue-Prompted Gopher, our wording.
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
        if self.seed is not None:
            check_seed(self.seed)  # (the replies' seeds wrap; the one given must be one torch takes)
        self.generation(0)  # refuses a bad temperature, top-p, length, k or seed before the first turn

    def turn_seed(self, turn: int) -> int | None:
        """Reply ``turn``'s seed: ``seed + turn``, wrapped into the seeds torch takes ([0, 2^63)), so that a
        large --seed does not fail every reply after the first."""
        return None if self.seed is None else (self.seed + turn) % 2**63

    def generation(self, turn: int) -> GenerationConfig:
        """The generation config of reply ``turn``: stops at the next "User:" line."""
        seed = self.turn_seed(turn)
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, k=self.k, seed=seed, stop=(f"\n{USER}:",))
