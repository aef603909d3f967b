"""Append-only JSONL store of finished answers: nothing finished is ever lost, reruns resume.

Each line is ``{"key", "id", "model", "request": {...}, "completion": {...}}``. A line is written
(and fsync'ed) as soon as its answer exists, so a crash, a server error or a timeout in the middle
of a run keeps every earlier answer. A truncated *last* line (killed mid-write) is ignored with a
warning; a malformed line elsewhere is a user error (the file was edited by hand).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trustlab.errors import UserError
from trustlab.llm.base import ChatRequest, Completion
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


class ResponseStore:
    """A JSONL file of answers keyed by :meth:`ChatRequest.key`.

    Args:
        path: The JSONL file (created with its folder when missing).
        model: Model identifier folded into the keys (answers of another model never match).
    """

    def __init__(self, path: str | Path, model: str) -> None:
        self.path = Path(path)
        self.model = model
        self._done: dict[str, Completion] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec["key"]
                comp = Completion.from_dict(rec["completion"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                if i == len(lines) - 1:
                    log.warning("%s: ignoring a truncated last line (an interrupted write)", self.path)
                    continue
                raise UserError(
                    f"responses file {str(self.path)!r} line {i + 1} is malformed ({exc})",
                    "fix or delete that line (finished answers on other lines are kept)",
                ) from exc
            self._done[key] = comp

    def key(self, request: ChatRequest) -> str:
        """The store key of ``request`` for this store's model."""
        return request.key(self.model)

    def get(self, request: ChatRequest) -> Completion | None:
        """The saved completion of ``request``, if any."""
        return self._done.get(self.key(request))

    def __contains__(self, request: object) -> bool:
        return isinstance(request, ChatRequest) and self.key(request) in self._done

    def __len__(self) -> int:
        return len(self._done)

    def put(self, request: ChatRequest, completion: Completion, **meta: Any) -> None:
        """Append one finished answer (flushed and fsync'ed before returning)."""
        self.put_many([(request, completion)], **meta)

    def put_many(self, pairs: list[tuple[ChatRequest, Completion]], **meta: Any) -> None:
        """Append finished answers in one write (flushed and fsync'ed once before returning)."""
        if not pairs:
            return
        lines = []
        for request, completion in pairs:
            rec = {"key": self.key(request), "id": request.id, "model": self.model,
                   "request": {"messages": list(request.messages), "max_tokens": request.max_tokens,
                               "temperature": request.temperature, "seed": request.seed},
                   "completion": completion.to_dict(), **meta}
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        for request, completion in pairs:
            self._done[self.key(request)] = completion
