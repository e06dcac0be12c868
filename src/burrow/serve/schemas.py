"""Request bodies of the HTTP API: strict types, unknown fields rejected (422)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from burrow.data.tokenizer import valid_text
from burrow.defaults import DEFAULT_K
from burrow.generate import GenerationConfig


class _Strict(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; forbid: a misspelt option is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        """A JSON ``"\\ud800"`` escape (a lone surrogate) becomes U+FFFD, as the CLI reads bad bytes: the
        response echoes or continues the text, and a lone surrogate cannot be encoded as UTF-8."""
        if isinstance(value, str):
            return valid_text(value)
        if isinstance(value, list):
            return [valid_text(v) if isinstance(v, str) else v for v in value]
        return value


class GenerateRequest(_Strict):
    """POST /v1/generate."""

    prompt: str = Field(description="Text to continue (read as the start of a document).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate; default 64, or the server's "
                                                          "limit when that is lower.")
    temperature: float = Field(GenerationConfig.temperature, ge=0.0, allow_inf_nan=False,
                               description="Softmax temperature; 0 is greedy.")
    top_k: int = Field(GenerationConfig.top_k, ge=0, description="Sample among the k most likely tokens; 0 is off.")
    top_p: float = Field(GenerationConfig.top_p, gt=0.0, le=1.0, allow_inf_nan=False,
                         description="Nucleus sampling p; 1 is off.")
    greedy: bool = Field(False, description="Always take the most likely token.")
    seed: int | None = Field(None, description="Sampler seed; the response reports the one used.")
    k: int = Field(DEFAULT_K, ge=1, description="Neighbours retrieved per chunk.")
    retrieval: bool = Field(True, description="Retrieve (RETRO[ON]); false runs RETRO[OFF].")
    stop: list[str] = Field(default_factory=list, max_length=8, description="Strings that end generation (at most "
                                                                            "8, each at most 64 characters).")
    stream: bool = Field(True, description="Stream newline-delimited JSON events; false returns one JSON document.")
    method: str | None = Field(None, max_length=200, description="Which of the server's methods generates "
                                                                 "(/health lists them); default: the first.")
    min_copy: int = Field(4, ge=1, description="Shortest copied span (tokens) reported and highlighted.")

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, stop: list[str]) -> list[str]:
        if any(len(s) > 64 for s in stop):  # each is matched against the held-back end of the text every token
            raise ValueError("each stop string must be at most 64 characters")
        return stop

    def generation_config(self, max_tokens: int) -> GenerationConfig:
        """The library config this request asks for, generating at most ``max_tokens``."""
        return GenerationConfig(max_new_tokens=max_tokens, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, greedy=self.greedy, seed=self.seed, k=self.k,
                                retrieval=self.retrieval, stop=tuple(self.stop), min_copy=self.min_copy)


DEFAULT_MAX_TOKENS = 64


class SearchRequest(_Strict):
    """POST /v1/search."""

    query: str = Field(min_length=1, description="Query text, encoded like a memory chunk.")
    k: int = Field(DEFAULT_K, ge=1, description="Neighbours to return.")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():  # `burrow memory search` refuses it too: the nearest chunks of nothing are arbitrary
            raise ValueError("the query is empty (only spaces); give the text to search for")
        return query


class ScoreRequest(_Strict):
    """POST /v1/score."""

    text: str = Field(min_length=1, description="Text scored as one whole document.")
    retrieval: bool = Field(True, description="RETRO[ON] (retrieve per chunk) for a RETRO model.")
    k: int = Field(DEFAULT_K, ge=1, description="Neighbours per chunk when retrieving.")
