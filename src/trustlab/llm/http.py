"""Client for any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, ...).

Standard library only (``urllib``). Each request has a timeout; transient failures (connection
errors and resets, timeouts, truncated responses, HTTP 429 and 5xx) are retried with exponential
backoff; other HTTP errors fail at once. When a request still fails, :class:`~trustlab.llm.base.BackendError` carries the completions
of the batch that did finish, and :func:`trustlab.llm.runner.run_requests` stores them before
re-raising, so nothing finished is lost.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trustlab.errors import UserError
from trustlab.llm.base import Backend, BackendError, ChatRequest, Completion
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIChatBackend(Backend):
    """``POST {base_url}/chat/completions`` for each request.

    Args:
        base_url: Endpoint root including the version, e.g. ``http://127.0.0.1:8000/v1``.
        model: Model name sent in the request body (and recorded with answers).
        api_key: Bearer token; default: the environment variable named by ``api_key_env`` (may be unset
            for local servers).
        api_key_env: Environment variable holding the key.
        timeout: Seconds to wait for one response.
        max_retries: Extra attempts after a transient failure.
        backoff: First retry delay in seconds (doubles each retry).
        concurrency: Requests in flight at once within a batch.
        logprobs: Ask for token log-probabilities (servers that support it return a confidence).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 1,
        logprobs: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"base_url {base_url!r} is not an http(s) URL", "pass e.g. http://127.0.0.1:8000/v1")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self.batch_size = self.concurrency
        self.logprobs = bool(logprobs)

    def _body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(req.messages), "max_tokens": req.max_tokens,
                                "temperature": req.temperature}
        if req.temperature > 0:
            body["seed"] = req.seed
        if self.logprobs:
            body["logprobs"] = True
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=data, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-chosen endpoint
            return json.loads(resp.read().decode("utf-8"))

    def complete(self, req: ChatRequest) -> Completion:
        """One request with retries; raises :class:`BackendError` when every attempt failed."""
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return _parse(self._post(self._body(req)))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200] if exc.fp else ""
                last = f"HTTP {exc.code} {detail}".strip()
                if exc.code in (400, 422) and self.logprobs:  # a server that rejects the logprobs field
                    log.warning("%s: %s with logprobs requested; continuing without log-probs", self.base_url, last)
                    self.logprobs = False
                    try:
                        return _parse(self._post(self._body(req)))
                    except urllib.error.HTTPError as exc2:
                        detail = exc2.read().decode("utf-8", "replace")[:200] if exc2.fp else ""
                        raise BackendError(f"{self.base_url}: HTTP {exc2.code} {detail}".strip()) from exc2
                if exc.code not in _RETRY_STATUS:
                    raise BackendError(f"{self.base_url}: {last}") from exc
            except TimeoutError:
                last = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as exc:
                timed_out = isinstance(exc.reason, TimeoutError)
                last = f"timed out after {self.timeout:g} s" if timed_out else f"connection failed ({exc.reason})"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                last = f"malformed response ({exc})"
            except (OSError, http.client.HTTPException) as exc:  # reset / dropped / truncated mid-response
                last = f"connection lost ({type(exc).__name__}: {exc})"
            if attempt < self.max_retries:
                delay = self.backoff * 2**attempt
                log.warning("%s: %s; retry %d/%d in %.1f s", self.base_url, last, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise BackendError(f"{self.base_url}: request {req.id or '?'} failed after {self.max_retries + 1} attempt(s): {last}")

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Complete ``requests`` (``concurrency`` at a time); on failure the finished ones ride on the error."""
        results: list[Completion | None] = [None] * len(requests)
        errors: list[BackendError] = []

        def one(i: int) -> None:
            try:
                results[i] = self.complete(requests[i])
            except BackendError as exc:
                errors.append(exc)

        if self.concurrency == 1 or len(requests) == 1:
            for i in range(len(requests)):
                one(i)
                if errors:
                    break
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                list(pool.map(one, range(len(requests))))
        if errors:
            raise BackendError(str(errors[0]), partial=results)
        return [r for r in results if r is not None]


def list_models(base_url: str, timeout: float = 10.0, api_key: str | None = None,
                api_key_env: str = "OPENAI_API_KEY") -> list[str]:
    """The model ids an OpenAI-compatible server reports at ``GET {base_url}/models``.

    Raises:
        BackendError: the server cannot be reached or does not answer with a model list.
    """
    key = api_key if api_key is not None else os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(f"{base_url.rstrip('/')}/models", headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - user-chosen endpoint
            body = json.loads(resp.read().decode("utf-8"))
        return [str(m["id"]) for m in body["data"]]
    except urllib.error.HTTPError as exc:
        raise BackendError(f"{base_url}/models: HTTP {exc.code}") from exc
    except (OSError, http.client.HTTPException, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BackendError(f"{base_url}/models: {type(exc).__name__}: {exc}") from exc


def _parse(resp: dict[str, Any]) -> Completion:
    """An OpenAI chat-completions response -> :class:`Completion`."""
    choice = resp["choices"][0]
    text = choice["message"].get("content") or ""
    lp = None
    n_tok = int((resp.get("usage") or {}).get("completion_tokens") or 0)
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if content:
        lp = float(sum(float(t["logprob"]) for t in content))
        n_tok = len(content)
    return Completion(text=text, logprob=lp, n_tokens=n_tok, finish_reason=str(choice.get("finish_reason") or "stop"))
