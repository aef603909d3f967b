"""Run any trustlab :class:`~trustlab.federated.strategy.Strategy` and client under Flower (extra ``fed``).

- :func:`to_flower_strategy` wraps a strategy as a Flower ``flwr.server.strategy.Strategy``
  (``configure_fit``/``aggregate_fit``), so Flower's own server drives it.
- :func:`to_flower_client` wraps a client (``cid``, ``state``, ``fit``) as a ``flwr.client.NumPyClient``;
  the client's id travels in the reply metrics (``"cid"``) so strategies keep per-client memory across
  rounds (Flower's proxies are not guaranteed stable, flwr#1910).
- :func:`run_flower_loopback` starts Flower's gRPC server and clients on 127.0.0.1 in threads: a real
  Flower run, used by the tests (3 clients, a few rounds).

Flower's round configs carry scalars and bytes only; strategies that broadcast arrays must encode them
(NADAFD sends its trigger bank as ``.npy`` bytes).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from trustlab.errors import require
from trustlab.federated.simulation import Client
from trustlab.federated.strategy import EvaluateReply, FitReply, NDArrays, Strategy
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["free_port", "run_flower_loopback", "to_flower_client", "to_flower_strategy"]


def _scalar_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, (bool, int, float, str, bytes)):
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            raise TypeError(f"config value {k!r} of type {type(v).__name__} cannot travel in a Flower config; "
                            "encode it as bytes")
    return out


def to_flower_strategy(strategy: Strategy, initial_parameters: NDArrays, min_clients: int) -> Any:
    """Wrap ``strategy`` as a Flower (legacy-API) ``Strategy`` driving ``min_clients`` clients per round.

    Args:
        strategy: Any trustlab strategy.
        initial_parameters: Initial global model.
        min_clients: Clients sampled (and waited for) every round.
    """
    fl = require("flwr", "fed")
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy as FlowerStrategy

    class _Adapter(FlowerStrategy):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.inner = strategy
            self.current_: NDArrays = [np.array(p, copy=True) for p in initial_parameters]
            self.metrics_: list[dict[str, Any]] = []

        def __repr__(self) -> str:
            return f"Flower({type(self.inner).__name__})"

        def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN202
            self.inner.initialize(self.current_)
            return ndarrays_to_parameters(self.current_)

        def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN202
            proxies = client_manager.sample(num_clients=min_clients, min_num_clients=min_clients)
            current = parameters_to_ndarrays(parameters)
            cfgs = self.inner.configure_train(server_round, current, [p.cid for p in proxies])
            return [(p, FitIns(parameters, _scalar_config(cfgs.get(p.cid, {})))) for p in proxies]

        def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN202
            if not results:
                return None, {}
            replies = [FitReply(res.metrics.get("cid", proxy.cid), parameters_to_ndarrays(res.parameters),
                                int(res.num_examples), dict(res.metrics)) for proxy, res in results]
            replies.sort(key=lambda r: str(r.client_id))
            new, info = self.inner.aggregate_train(server_round, self.current_, replies)
            self.current_ = new
            self.metrics_.append(info)
            flat = {k: v for k, v in info.items() if isinstance(v, (int, float, str, bytes, bool))}
            return ndarrays_to_parameters(new), flat

        def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN202
            return []

        def aggregate_evaluate(self, server_round, results, failures):  # noqa: ANN001, ANN202
            replies = [EvaluateReply(proxy.cid, float(res.loss), int(res.num_examples), dict(res.metrics))
                       for proxy, res in results]
            out = self.inner.aggregate_evaluate(server_round, replies)
            return out.get("loss"), out

        def evaluate(self, server_round, parameters):  # noqa: ANN001, ANN202
            return None

    del fl
    return _Adapter()


def to_flower_client(client: Client) -> Any:
    """Wrap a trustlab client as a Flower ``NumPyClient``."""
    require("flwr", "fed")
    from flwr.client import NumPyClient

    class _Client(NumPyClient):  # type: ignore[misc, valid-type]
        def get_parameters(self, config):  # noqa: ANN001, ANN202
            return []

        def fit(self, parameters, config):  # noqa: ANN001, ANN202
            reply = client.fit([np.asarray(p) for p in parameters], dict(config))
            metrics = {k: v for k, v in reply.metrics.items() if isinstance(v, (int, float, str, bytes, bool))}
            metrics["cid"] = client.cid if isinstance(client.cid, (int, str)) else str(client.cid)
            return list(reply.parameters), int(reply.num_examples), metrics

    return _Client()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_flower_loopback(strategy: Strategy, clients: Sequence[Client], initial_parameters: NDArrays,
                        num_rounds: int, port: int | None = None, timeout: float = 120.0) -> tuple[NDArrays, list[dict[str, Any]]]:
    """Run ``num_rounds`` with Flower's gRPC server and one Flower client per trustlab client, over loopback.

    Every client trains in every round. Returns the final parameters and the strategy's per-round
    aggregation metrics.

    Must be called from the main thread (Flower's server installs signal handlers).

    Raises:
        TimeoutError: fewer than ``num_rounds`` rounds completed (a round timed out).
    """
    require("flwr", "fed")
    import flwr
    from flwr.server import ServerConfig

    if num_rounds < 1 or not clients:
        raise ValueError("need num_rounds >= 1 and at least one client")
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    adapter = to_flower_strategy(strategy, initial_parameters, min_clients=len(clients))
    errors: list[BaseException] = []
    workers = []
    for c in clients:
        fc = to_flower_client(c)

        def connect(fc: Any = fc) -> None:
            try:
                flwr.client.start_client(server_address=address, client=fc.to_client(), insecure=True,
                                         max_retries=50, max_wait_time=timeout)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                errors.append(exc)

        t = threading.Thread(target=connect, daemon=True, name=f"flower-client-{c.cid}")
        t.start()
        workers.append(t)
    # Flower's server installs signal handlers, so it must run in the main thread; clients retry until it is up.
    t0 = time.perf_counter()
    flwr.server.start_server(server_address=address, config=ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
                             strategy=adapter)
    for t in workers:
        t.join(max(1.0, timeout - (time.perf_counter() - t0)))
    if errors:
        raise RuntimeError(f"Flower loopback run failed: {errors[0]!r}") from errors[0]
    if len(adapter.metrics_) != num_rounds:
        raise TimeoutError(f"Flower loopback run finished {len(adapter.metrics_)} of {num_rounds} rounds")
    return adapter.current_, adapter.metrics_
