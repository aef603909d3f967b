"""The backend interface: chat requests in, completions out."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, str]


class BackendError(RuntimeError):
    """A backend could not produce a completion (server error after retries, timeout, ...).

    Args:
        message: What failed.
        partial: For a batch, the completions that did finish (``None`` where not), so callers can
            keep them.
    """

    def __init__(self, message: str, partial: list[Completion | None] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or []


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request.

    Attributes:
        messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
        max_tokens: Generation budget in tokens.
        temperature: 0 for greedy decoding (the default; RI is defined for the decoding used).
        id: Caller's id for the request (e.g. ``"pass1/country_capital/france"``); not part of :meth:`key`.
        seed: Sampling seed, used only when ``temperature > 0``.
    """

    messages: tuple[Message, ...]
    max_tokens: int = 32
    temperature: float = 0.0
    id: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        for m in self.messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"each message needs 'role' and 'content', got {m!r}")

    def key(self, model: str = "") -> str:
        """A stable hash of (model, messages, decoding params): the resume/cache key."""
        blob = json.dumps(
            {"model": model, "messages": list(self.messages), "max_tokens": self.max_tokens,
             "temperature": self.temperature, "seed": self.seed if self.temperature > 0 else None},
            sort_keys=True, ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class Completion:
    """A generated answer.

    Attributes:
        text: The generated text (special tokens removed).
        logprob: Sum of the generated tokens' log-probabilities, when the backend reports them.
        n_tokens: Number of generated tokens (0 when unknown).
        finish_reason: ``"stop"``, ``"length"`` or the server's value.
    """

    text: str
    logprob: float | None = None
    n_tokens: int = 0
    finish_reason: str = "stop"

    @property
    def mean_logprob(self) -> float | None:
        """Per-token mean log-probability (a length-normalised confidence), if known."""
        if self.logprob is None or self.n_tokens <= 0:
            return None
        return self.logprob / self.n_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSONL."""
        return {"text": self.text, "logprob": self.logprob, "n_tokens": self.n_tokens,
                "finish_reason": self.finish_reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Completion:
        """Inverse of :meth:`to_dict`."""
        lp = d.get("logprob")
        return cls(text=str(d.get("text", "")), logprob=None if lp is None else float(lp),
                   n_tokens=int(d.get("n_tokens") or 0), finish_reason=str(d.get("finish_reason") or "stop"))


class Backend(ABC):
    """Turns chat requests into completions; one verb, :meth:`generate`.

    Attributes:
        name: Model identifier recorded with every answer (part of the resume key).
        batch_size: How many requests :func:`trustlab.llm.runner.run_requests` hands over at once.
    """

    name: str = "backend"
    batch_size: int = 1

    @abstractmethod
    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Complete every request (same order). Raise :class:`BackendError` when it cannot."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (optional)."""
