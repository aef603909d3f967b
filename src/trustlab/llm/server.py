"""A small OpenAI-compatible HTTP server around any :class:`~trustlab.llm.base.Backend`.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming) on a thread, by default
on ``127.0.0.1`` with a free port. It lets the HTTP client be tested against a real server and lets
users expose a local model to tools that speak the OpenAI API. A backend exception becomes an HTTP
500 with an OpenAI-style error body.

Example:
    >>> from trustlab.llm.recorded import EchoBackend
    >>> with OpenAICompatServer(EchoBackend()) as srv:
    ...     srv.base_url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trustlab.llm.base import Backend, ChatRequest
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog (5) resets connections under concurrent clients


class OpenAICompatServer:
    """Serve ``backend`` over HTTP until :meth:`stop` (or the ``with`` block ends).

    Args:
        backend: What answers the requests.
        host: Interface to bind (loopback by default).
        port: Port (0 picks a free one).
        model_name: Name reported by ``/v1/models`` (default: ``backend.name``).
        fault: Optional fault injection for tests: called with the 1-based number of each chat request
            received; ``"reset"`` closes the connection without an answer, ``"500"`` answers HTTP 500,
            ``"reject-logprobs"`` answers HTTP 400 to a request that asks for log-probs,
            ``None`` serves normally.
        latency_s: Seconds each chat request waits before generating, outside the generation lock (stands
            for network and batched-model latency that concurrent clients overlap; benchmarks).

    Attributes:
        requests_received: Chat requests received (including failed ones).
        requests_served: Chat requests answered with a completion.
    """

    def __init__(self, backend: Backend, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                 fault: Callable[[int], str | None] | None = None, latency_s: float = 0.0) -> None:
        self.backend = backend
        self.model_name = model_name or backend.name
        self.fault = fault
        self.latency_s = float(latency_s)
        self._lock = threading.Lock()  # one generation at a time (models are not thread-safe)
        self._count_lock = threading.Lock()
        self.requests_received = 0
        self.requests_served = 0
        handler = self._make_handler()
        self.httpd = _Server((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAICompatServer:
        """Start serving on a daemon thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="openai-compat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet; use our logger
                log.debug("server: " + fmt, *args)

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode("utf-8")
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout)
                    pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._count_lock:
                    server.requests_received += 1
                    n = server.requests_received
                what = server.fault(n) if server.fault is not None else None
                if what == "reset":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if what == "500":
                    self._send(500, {"error": {"message": "injected failure", "type": "server_error"}})
                    return
                if what == "reject-logprobs" and b'"logprobs"' in raw:
                    self._send(400, {"error": {"message": "logprobs is not supported", "type": "invalid_request_error"}})
                    return
                try:
                    body = json.loads(raw)
                    req = ChatRequest(messages=tuple(body["messages"]), max_tokens=int(body.get("max_tokens") or 32),
                                      temperature=float(body.get("temperature") or 0.0), seed=int(body.get("seed") or 0))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    self._send(400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})
                    return
                if server.latency_s > 0:
                    time.sleep(server.latency_s)
                try:
                    with server._lock:
                        comp = server.backend.generate([req])[0]
                except Exception as exc:  # noqa: BLE001 - any backend failure is a 500 for the client
                    self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})
                    return
                with server._count_lock:
                    server.requests_served += 1
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": comp.text},
                                          "finish_reason": comp.finish_reason}
                if body.get("logprobs") and comp.logprob is not None and comp.n_tokens > 0:
                    per = comp.logprob / comp.n_tokens  # per-token split is not kept; report the mean
                    choice["logprobs"] = {"content": [{"token": "", "logprob": per}] * comp.n_tokens}
                self._send(200, {
                    "id": f"chatcmpl-{server.requests_served}", "object": "chat.completion", "created": int(time.time()),
                    "model": server.model_name, "choices": [choice],
                    "usage": {"prompt_tokens": 0, "completion_tokens": comp.n_tokens, "total_tokens": comp.n_tokens},
                })

        return Handler
