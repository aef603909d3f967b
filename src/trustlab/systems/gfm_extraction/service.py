"""A victim GFM behind an HTTP embedding endpoint: a bounded loopback server and its client.

Protocol (JSON over HTTP POST, version 1):

- ``POST /v1/embed`` ``{"x": [[float]*d]*N, "edge_index": [[src...], [dst...]], "nodes": [int]}`` ->
  ``{"embeddings": [[float]*d]*len(nodes)}``: embeddings of ``nodes`` computed on the graph the caller
  sends (node features = text embeddings of the node texts with the public text encoder).
- ``POST /v1/embed_text`` ``{"text_emb": [[float]*d]*C}`` -> ``{"embeddings": [...]}``: the victim's
  text tower (zero-shot needs it; not counted as graph queries).
- ``GET /v1/info`` -> ``{"dim", "budget", "queries"}``.
- Errors: ``429`` when the query budget is spent (the client raises :class:`QueryBudgetExceeded`),
  ``400`` for a malformed request, ``413`` for a body over the limit; body ``{"error": "..."}``.

The server binds to loopback only (``127.0.0.1``/``::1``/``localhost``), caps the request body and the
nodes per request, and counts every returned node embedding against its budget.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.systems.gfm_extraction.method import QueryBudgetExceeded, VictimService
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class VictimServer:
    """A threaded HTTP server around a :class:`VictimService` (or anything with ``embed``/``embed_text``).

    Args:
        service: The victim service (its budget/defense apply).
        host: Loopback address to bind (anything else is refused).
        port: TCP port (0: pick a free one).
        max_body_bytes: Largest accepted request body.
        max_nodes: Most nodes per ``/v1/embed`` request.

    Example:
        >>> srv = VictimServer(VictimService(model, budget=100)).start()  # doctest: +SKIP
        >>> HTTPVictim(srv.url).embed(x, edge_index, torch.arange(5))     # doctest: +SKIP
        >>> srv.stop()                                                    # doctest: +SKIP
    """

    def __init__(self, service: Any, host: str = "127.0.0.1", port: int = 0, max_body_bytes: int = 64 << 20,
                 max_nodes: int = 10_000) -> None:
        if host not in LOOPBACK:
            raise UserError(f"refusing to serve the victim on {host!r}", "bind to 127.0.0.1 (loopback only)")
        self.service, self.max_body, self.max_nodes = service, max_body_bytes, max_nodes
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
                log.debug("victim server: " + fmt, *args)

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/v1/info":
                    return self._send(404, {"error": f"no endpoint {self.path}"})
                s = outer.service
                self._send(200, {"dim": getattr(s, "dim", None), "budget": getattr(s, "budget", None),
                                 "queries": getattr(s, "queries", None)})

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                if n > outer.max_body:
                    return self._send(413, {"error": f"body of {n} bytes exceeds {outer.max_body}"})
                try:
                    req = json.loads(self.rfile.read(n) or b"{}")
                    if self.path == "/v1/embed":
                        x = torch.tensor(req["x"], dtype=torch.float32)
                        ei = torch.tensor(req["edge_index"], dtype=torch.long).reshape(2, -1)
                        nodes = torch.tensor(req["nodes"], dtype=torch.long).flatten()
                        if nodes.numel() > outer.max_nodes:
                            return self._send(400, {"error": f"{nodes.numel()} nodes > {outer.max_nodes} per request"})
                        if x.ndim != 2 or (ei.numel() and (ei.min() < 0 or ei.max() >= x.shape[0])) or \
                                (nodes.numel() and (nodes.min() < 0 or nodes.max() >= x.shape[0])):
                            return self._send(400, {"error": "node ids out of range or x not 2-D"})
                        with outer._lock:
                            emb = outer.service.embed(x, ei, nodes)
                    elif self.path == "/v1/embed_text":
                        with outer._lock:
                            emb = outer.service.embed_text(torch.tensor(req["text_emb"], dtype=torch.float32))
                    else:
                        return self._send(404, {"error": f"no endpoint {self.path}"})
                except QueryBudgetExceeded as exc:
                    return self._send(429, {"error": str(exc)})
                except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                    return self._send(400, {"error": f"malformed request: {exc}"})
                self._send(200, {"embeddings": emb.tolist()})

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> VictimServer:
        """Serve in a daemon thread; returns ``self``."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and close its socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> VictimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HTTPVictim:
    """Client of a victim endpoint speaking the protocol above; same interface as :class:`VictimService`.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:8000``.
        timeout: Seconds per request.
        hops: Send only the ``hops``-hop neighbourhood of the requested nodes (relabelled) instead of the
            whole graph; exact for mean-aggregation encoders (GraphSAGE, GAT) with at most ``hops``
            layers (degree-normalised GCN needs one hop more). ``None``: the whole graph every time.
    """

    def __init__(self, url: str, timeout: float = 60.0, hops: int | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--victim-url {url!r} is not an http(s) URL", "write e.g. http://127.0.0.1:8000")
        if hops is not None and hops < 1:
            raise UserError(f"--hops {hops} must be >= 1", "use e.g. --hops 2, or leave it out to send the whole graph")
        self.url, self.timeout, self.hops = url.rstrip("/"), timeout, hops
        self.queries = 0

    def _post(self, path: str, obj: dict[str, Any]) -> list[list[float]]:
        data = json.dumps(obj).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-given endpoint
                return json.loads(resp.read())["embeddings"]
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                msg = exc.reason
            if exc.code == 429:
                raise QueryBudgetExceeded(f"the victim refused the query: {msg}", "lower --budget") from exc
            raise UserError(f"the victim at {self.url} answered {exc.code}: {msg}", "check the endpoint") from exc
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot reach the victim at {self.url} ({exc})",
                            "start the server or fix --victim-url") from exc

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Victim embeddings of ``nodes`` on the graph (``x``, ``edge_index``)."""
        if self.hops is not None:
            from torch_geometric.utils import k_hop_subgraph

            subset, edge_index, nodes, _ = k_hop_subgraph(nodes, self.hops, edge_index, relabel_nodes=True,
                                                          num_nodes=x.shape[0])
            x = x[subset]
        out = torch.tensor(self._post("/v1/embed", {"x": x.tolist(), "edge_index": edge_index.tolist(),
                                                    "nodes": nodes.tolist()}), dtype=torch.float32)
        self.queries += int(nodes.numel())
        return out

    def embed_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """The victim's text tower on ``text_emb``."""
        return torch.tensor(self._post("/v1/embed_text", {"text_emb": text_emb.tolist()}), dtype=torch.float32)


def serve(victim: Any, port: int = 0, budget: int | None = None) -> VictimServer:
    """Start a loopback server for ``victim`` (a :class:`GFM` or a service) and return it (call ``stop()``)."""
    from trustlab.systems.gfm_extraction.method import GFM

    svc = VictimService(victim, budget=budget) if isinstance(victim, GFM) else victim
    return VictimServer(svc, port=port).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m trustlab.systems.gfm_extraction.service --victim MODULE:FACTORY [--port N] [--budget N]``.

    Serves the victim on 127.0.0.1 until interrupted (``--victim embedded``: the demo victim).
    """
    import argparse
    import logging
    import time

    from trustlab.systems.gfm_extraction.tool import load_factory

    ap = argparse.ArgumentParser(prog="python -m trustlab.systems.gfm_extraction.service")
    ap.add_argument("--victim", required=True, help="MODULE:FACTORY, or 'embedded' for the demo victim")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--budget", type=int, default=None, help="most node embeddings returned in total")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = "trustlab.systems.gfm_extraction.demo:victim" if args.victim == "embedded" else args.victim
    victim = load_factory(spec)
    if args.budget is not None:
        if not isinstance(victim, VictimService):
            raise UserError("--budget needs a GFM or VictimService victim", "enforce the budget in your victim")
        victim.budget = args.budget
    srv = VictimServer(victim, port=args.port).start()
    log.info("serving the victim at %s (Ctrl-C to stop)", srv.url)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        srv.stop()
    return 0


__all__ = ["HTTPVictim", "VictimServer", "serve", "VictimService"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
