"""The model cache is keyed by recipe and torch thread count (a run never reuses another thread count's model)."""

from __future__ import annotations

import torch

from trustlab.utils.cache import cache_path


def test_cache_key_depends_on_recipe_and_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cache_path("ns", {"a": 1})
        assert cache_path("ns", {"a": 1}) == one  # stable
        assert cache_path("ns", {"a": 2}) != one  # recipe in the key
        flat = cache_path("ns", {"a": 1}, threads=False)
        torch.set_num_threads(2)
        assert cache_path("ns", {"a": 1}) != one  # thread count in the key
        assert cache_path("ns", {"a": 1}, threads=False) == flat  # ... unless the artifact does not depend on it
    finally:
        torch.set_num_threads(before)
    assert one.parent == tmp_path / "ns"
