"""Wall time and peak memory of a code block.

CUDA: the caching allocator's peak minus what was allocated at the start. CPU: process RSS cannot
isolate one block (the allocator reuses freed pages, so a block often adds no RSS at all), so a
``TorchDispatchMode`` tracks the storage bytes of every tensor that torch ops create inside the block
(forward and backward), freeing them when the tensor dies, and reports the live peak. That is the
activation/gradient memory the block needs beyond the weights, the same quantity as the CUDA figure.
"""

from __future__ import annotations

import time
import weakref
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveBytes(TorchDispatchMode):
    """Peak of live bytes of tensors created by torch ops while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                try:
                    key, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                except (RuntimeError, NotImplementedError):
                    continue
                if nbytes and key not in self.live:
                    self.live[key] = nbytes
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(t, self._free, key)
        return out


class Measure:
    """``with Measure(device) as m: ...`` then ``m.seconds`` (wall), ``m.cpu_seconds`` (process CPU) and ``m.peak_mb``.

    Args:
        device: Where the block runs.
        track_memory: Track CPU tensor memory (adds some Python overhead per op; time the block
            separately when comparing speed).
    """

    def __init__(self, device: Any = "cpu", track_memory: bool = True) -> None:
        self.device = torch.device(device)
        self.track_memory = track_memory
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.peak_mb = 0.0
        self._mode: _LiveBytes | None = None
        self._base = 0

    def __enter__(self) -> Measure:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self.track_memory:
            self._mode = _LiveBytes()
            self._mode.__enter__()
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.seconds = time.perf_counter() - self._t0
            self.cpu_seconds = time.process_time() - self._c0
            self.peak_mb = max(torch.cuda.max_memory_allocated(self.device) - self._base, 0) / 2**20
            return
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0
        if self._mode is not None:
            self._mode.__exit__(exc_type, exc, tb)
            self.peak_mb = self._mode.peak / 2**20
