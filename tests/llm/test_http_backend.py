"""OpenAI-compatible HTTP backend against a real local server (loopback) serving a tiny in-code model.

Covers: answers over HTTP equal the model's own greedy answers; a server error and a client timeout
each stop the run without losing finished answers (append-only JSONL), and a rerun resumes with only
the missing requests; transient errors are retried; recorded responses replay the stored answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from trustlab.llm.base import Backend, BackendError, ChatRequest, Completion
from trustlab.llm.http import OpenAIChatBackend
from trustlab.llm.recorded import RecordedBackend
from trustlab.llm.runner import run_requests
from trustlab.llm.server import OpenAICompatServer
from trustlab.llm.store import ResponseStore


class FaultyBackend(Backend):
    """Wraps a backend; fails (raises) or stalls (sleeps) on chosen request numbers (1-based)."""

    def __init__(self, inner: Backend, fail_on: set[int] | None = None, stall_on: set[int] | None = None,
                 stall_s: float = 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.fail_on = set(fail_on or ())
        self.stall_on = set(stall_on or ())
        self.stall_s = stall_s
        self.calls = 0
        self.lock = threading.Lock()

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n in self.fail_on:
            raise RuntimeError(f"injected failure on call {n}")
        if n in self.stall_on:
            time.sleep(self.stall_s)
        return self.inner.generate(requests)


@pytest.fixture(scope="module")
def tiny_backend() -> Iterator[Backend]:
    from trustlab.llm.hf import HFBackend
    from trustlab.llm.tiny import tiny_chat_model

    model, tok = tiny_chat_model(seed=0)
    yield HFBackend(model, tokenizer=tok, batch_size=4, name="tiny-llama")


def _requests(n: int) -> list[ChatRequest]:
    return [ChatRequest(messages=({"role": "system", "content": "Answer briefly."},
                                  {"role": "user", "content": f"What is {i} plus {i}?"}), max_tokens=6, id=f"q{i}")
            for i in range(n)]


def test_http_answers_equal_local_model(tiny_backend: Backend) -> None:
    reqs = _requests(3)
    local = [tiny_backend.generate([r])[0] for r in reqs]  # one at a time, as the server does
    with OpenAICompatServer(tiny_backend) as srv:
        client = OpenAIChatBackend(srv.base_url, "tiny-llama", timeout=30, max_retries=0, logprobs=True)
        remote = client.generate(reqs)
        import json
        import urllib.request

        models = json.loads(urllib.request.urlopen(f"{srv.base_url}/models", timeout=5).read())
    assert [c.text for c in remote] == [c.text for c in local]
    assert all(c.logprob is not None and c.logprob < 0 and c.n_tokens > 0 for c in remote)
    assert models["data"][0]["id"] == "tiny-llama"


def test_server_error_keeps_finished_answers_and_resumes(tiny_backend: Backend, tmp_path: Path) -> None:
    reqs = _requests(5)
    faulty = FaultyBackend(tiny_backend, fail_on={3})  # the 3rd request served fails with HTTP 500
    path = tmp_path / "answers.jsonl"
    with OpenAICompatServer(faulty) as srv:
        client = OpenAIChatBackend(srv.base_url, "tiny-llama", timeout=30, max_retries=0)
        with pytest.raises(BackendError, match="HTTP 500"):
            run_requests(client, reqs, ResponseStore(path, client.name))
        assert len(ResponseStore(path, client.name)) == 2  # the two finished answers survived
        served_before = srv.requests_served
        out = run_requests(client, reqs, ResponseStore(path, client.name))  # resume
        assert srv.requests_served - served_before == 3  # only the missing three were asked
    assert len(out) == 5
    assert [c.text for c in out] == [tiny_backend.generate([r])[0].text for r in reqs]


def test_timeout_keeps_finished_answers_and_resumes(tiny_backend: Backend, tmp_path: Path) -> None:
    reqs = _requests(4)
    faulty = FaultyBackend(tiny_backend, stall_on={2}, stall_s=1.5)
    path = tmp_path / "answers.jsonl"
    with OpenAICompatServer(faulty) as srv:
        client = OpenAIChatBackend(srv.base_url, "tiny-llama", timeout=0.5, max_retries=0)
        with pytest.raises(BackendError, match="timed out"):
            run_requests(client, reqs, ResponseStore(path, client.name))
        assert len(ResponseStore(path, client.name)) == 1
        time.sleep(1.2)  # let the stalled server thread finish
        out = run_requests(client, reqs, ResponseStore(path, client.name))
    assert len(out) == 4 and len(ResponseStore(path, client.name)) == 4


def test_transient_error_is_retried_and_partial_batch_kept(tiny_backend: Backend, tmp_path: Path) -> None:
    reqs = _requests(3)
    with OpenAICompatServer(FaultyBackend(tiny_backend, fail_on={2})) as srv:
        client = OpenAIChatBackend(srv.base_url, "tiny-llama", timeout=30, max_retries=1, backoff=0.01)
        assert len(client.generate(reqs)) == 3  # the failed call was retried
    with OpenAICompatServer(FaultyBackend(tiny_backend, fail_on={2})) as srv:
        client = OpenAIChatBackend(srv.base_url, "tiny-llama", timeout=30, max_retries=0)
        path = tmp_path / "b.jsonl"
        with pytest.raises(BackendError):
            run_requests(client, reqs, ResponseStore(path, client.name), batch_size=3)  # one batch of 3
        assert len(ResponseStore(path, client.name)) == 1  # the finished one of the failed batch is kept


def test_unreachable_server_is_a_backend_error() -> None:
    client = OpenAIChatBackend("http://127.0.0.1:9/v1", "x", timeout=0.5, max_retries=0)
    with pytest.raises(BackendError, match="connection failed|timed out"):
        client.generate(_requests(1))


def test_recorded_backend_replays_store(tiny_backend: Backend, tmp_path: Path) -> None:
    reqs = _requests(3)
    path = tmp_path / "rec.jsonl"
    first = run_requests(tiny_backend, reqs, ResponseStore(path, tiny_backend.name))
    replay = RecordedBackend(path)
    assert [c.text for c in replay.generate(reqs)] == [c.text for c in first]
    path.write_text(path.read_text() + '{"key": "trunc')  # a write cut off mid-line is ignored
    assert len(ResponseStore(path, tiny_backend.name)) == 3


def test_hf_backend_loads_a_saved_model_by_path(tiny_backend: Backend, tmp_path: Path) -> None:
    from trustlab.errors import UserError
    from trustlab.llm.hf import HFBackend

    tiny_backend.model.save_pretrained(tmp_path / "m")  # type: ignore[attr-defined]
    tiny_backend.tokenizer.save_pretrained(tmp_path / "m")  # type: ignore[attr-defined]
    loaded = HFBackend(tmp_path / "m", batch_size=2)  # offline: local_files_only by default
    reqs = _requests(2)
    assert [c.text for c in loaded.generate(reqs)] == [c.text for c in tiny_backend.generate(reqs)]
    with pytest.raises(UserError, match="cannot load causal LM"):
        HFBackend(tmp_path / "missing-model")
