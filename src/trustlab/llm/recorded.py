"""Backends without a model: replay recorded responses (JSONL), or echo (for wiring checks)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from trustlab.errors import UserError
from trustlab.llm.base import Backend, ChatRequest, Completion


class RecordedBackend(Backend):
    """Answers from a JSONL file of recorded responses.

    Each line needs ``"text"`` (or ``"response"``) and either ``"id"`` (matched to
    :attr:`ChatRequest.id`) or ``"key"`` (a :meth:`ChatRequest.key`, as written by
    :class:`~trustlab.llm.store.ResponseStore`, whose files can be replayed directly: their answer
    is under ``"completion"``).

    Args:
        path: The JSONL file.
        name: Model identifier (default: ``recorded:<file name>``).

    Raises:
        UserError: missing file, malformed line, or (on :meth:`generate`) a request with no recorded answer.
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"recorded responses file {str(p)!r} does not exist", "check the path")
        self.name = name or f"recorded:{p.name}"
        self.by_id: dict[str, Completion] = {}
        self.by_key: dict[str, Completion] = {}
        self.models: list[str] = [""]
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if "completion" in rec:
                    comp = Completion.from_dict(rec["completion"])
                else:
                    text = rec["text"] if "text" in rec else rec["response"]
                    lp = rec.get("logprob")
                    comp = Completion(text=str(text), logprob=None if lp is None else float(lp),
                                      n_tokens=int(rec.get("n_tokens") or 0))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{str(p)!r} line {i} is not a recorded response ({exc})",
                                'each line needs {"id": ..., "text": ...}') from exc
            if rec.get("id"):
                self.by_id[str(rec["id"])] = comp
            if rec.get("key"):
                self.by_key[str(rec["key"])] = comp
                if rec.get("model") and rec["model"] not in self.models:
                    self.models.append(str(rec["model"]))
            if not rec.get("id") and not rec.get("key"):
                raise UserError(f"{str(p)!r} line {i} has neither 'id' nor 'key'", "add the question/request id")

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Look each request up by id, then by key."""
        out = []
        for r in requests:
            comp = self.by_id.get(r.id)
            if comp is None:
                for model in (self.name, *self.models):
                    comp = self.by_key.get(r.key(model))
                    if comp is not None:
                        break
            if comp is None:
                raise UserError(f"no recorded response for request {r.id or r.key()!r}",
                                "record it first (or evaluate with a live backend)")
            out.append(comp)
        return out


class EchoBackend(Backend):
    """Repeats the last user message (no model; for plumbing checks and doctests)."""

    name = "echo"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Echo each request's last user message."""
        out = []
        for r in requests:
            users = [m["content"] for m in r.messages if m["role"] == "user"]
            text = users[-1] if users else ""
            out.append(Completion(text=text, logprob=0.0, n_tokens=len(text.split())))
        return out
