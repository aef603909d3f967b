"""Run many requests through a backend with resume: finished answers are stored one by one."""

from __future__ import annotations

from collections.abc import Sequence

from trustlab.llm.base import Backend, BackendError, ChatRequest, Completion
from trustlab.llm.store import ResponseStore
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


def run_requests(
    backend: Backend,
    requests: Sequence[ChatRequest],
    store: ResponseStore | None = None,
    batch_size: int | None = None,
    desc: str = "generate",
) -> list[Completion]:
    """Complete ``requests`` in order, skipping those already in ``store`` and saving each new one.

    Args:
        backend: Any :class:`Backend`.
        requests: The requests.
        store: Where finished answers are appended (and read back on a rerun); ``None`` keeps nothing.
        batch_size: Requests per :meth:`Backend.generate` call (default: ``backend.batch_size``).
        desc: Progress-bar label.

    Returns:
        One completion per request.

    Raises:
        BackendError: the backend failed; every answer finished before the failure is already in
            ``store``, so calling again resumes from the first missing one.
    """
    bs = max(1, int(batch_size or backend.batch_size or 1))
    out: list[Completion | None] = [store.get(r) if store is not None else None for r in requests]
    todo = [i for i, c in enumerate(out) if c is None]
    if store is not None and len(todo) < len(requests):
        log.info("%s: resuming, %d of %d answers already stored", desc, len(requests) - len(todo), len(requests))
    batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
    for batch in progress(batches, desc=desc, total=len(batches)):
        try:
            comps = backend.generate([requests[i] for i in batch])
        except BackendError as exc:  # keep what finished inside the failed batch, then stop
            if store is not None:
                store.put_many([(requests[i], c) for i, c in zip(batch, exc.partial, strict=False) if c is not None])
            raise
        if len(comps) != len(batch):
            raise RuntimeError(f"backend {backend.name!r} returned {len(comps)} completions for {len(batch)} requests")
        if store is not None:
            store.put_many([(requests[i], c) for i, c in zip(batch, comps, strict=True)])
        for i, c in zip(batch, comps, strict=True):
            out[i] = c
    return [c for c in out if c is not None]
