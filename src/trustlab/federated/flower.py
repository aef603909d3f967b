"""Run any trustlab strategy and client under Flower's Message API (extra ``fed``).

- :class:`MessageStrategy` is a ``flwr.serverapp.strategy.Strategy`` (``configure_train`` /
  ``aggregate_train`` over ``Message``, ``ArrayRecord``, ``ConfigRecord``, ``MetricRecord``) that drives
  a trustlab :class:`~trustlab.federated.strategy.Strategy`. **Client identity is Flower's node id**
  (``message.metadata.src_node_id``), never a value the client reports, so per-client server state
  (NADAFD health, FoolsGold history, FairFed weights) is keyed by node id and survives partial
  participation. Replies with errors, NaN/inf or wrongly shaped arrays are excluded with a logged reason.
- :func:`make_client_app` turns a factory ``(partition_id, context) -> client`` into a ``ClientApp``;
  :func:`make_server_app` turns a factory ``context -> ServerSetup`` into a ``ServerApp``.
- :func:`run_on_flower` trains any strategy + clients this way and returns the History in the
  clients' partition ids; :func:`run_flower_simulation` runs a ServerApp/ClientApp pair on Flower's Simulation Engine (``flwr.simulation``, Ray
  backend); :class:`InlineGrid` is a ``Grid`` that calls the ClientApp in the same process (tests,
  debugging: the same messages, no Ray).

Client sampling is deterministic: the sorted node ids are sampled with the generator of
``(seed, round)``, exactly as :func:`trustlab.federated.simulation.simulate` samples client ids.

Example (no Ray; every client moves the model by its partition id):
    >>> import numpy as np
    >>> from trustlab.federated import FedAvg, FitReply
    >>> class Shift:
    ...     def __init__(self, pid): self.cid, self.state = pid, {}
    ...     def fit(self, p, cfg): return FitReply(self.cid, [p[0] + self.cid], 1)
    >>> client_app = make_client_app(lambda pid, ctx: Shift(pid))
    >>> strat = MessageStrategy(FedAvg())
    >>> hist = strat.run(InlineGrid(client_app, 3), [np.zeros(1)], num_rounds=1)
    >>> hist.parameters[0].tolist()
    [1.0]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustlab.errors import UserError, require
from trustlab.federated.simulation import Client, History, RoundLog, sample_clients
from trustlab.federated.strategy import FitReply, NDArrays, Strategy
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)

__all__ = ["InlineGrid", "MessageStrategy", "ServerSetup", "make_client_app", "make_server_app", "relabel",
           "run_flower_simulation", "run_on_flower"]

require("flwr", "fed")
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import Strategy as FlowerStrategy  # noqa: E402

ARRAYS, CONFIG, METRICS, NUM_EXAMPLES = "arrays", "config", "metrics", "num-examples"
_SCALARS = (bool, int, float, str, bytes)


def _config_record(cfg: dict[str, Any]) -> ConfigRecord:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, np.generic):
            v = v.item()
        if not isinstance(v, _SCALARS):
            raise TypeError(f"config value {k!r} of type {type(v).__name__} cannot travel in a ConfigRecord; "
                            "encode it as bytes")
        out[k] = v
    return ConfigRecord(out)


def _metric_record(metrics: dict[str, Any]) -> MetricRecord:
    return MetricRecord({k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                         for k, v in metrics.items()
                         if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)})


def _arrays(params: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord([np.ascontiguousarray(np.asarray(p)) for p in params])


class MessageStrategy(FlowerStrategy):  # type: ignore[misc]
    """A Flower Message-API strategy running a trustlab strategy on the server.

    Args:
        inner: The trustlab strategy (FedAvg, Krum, NADAFD, FPF, ...).
        fraction_train: Fraction of the connected nodes sampled per round.
        min_train_nodes: Minimum sampled per round.
        min_available_nodes: Nodes to wait for before sampling.
        seed: Seed of node sampling (with the round number).
        wait_timeout: Seconds to wait for ``min_available_nodes`` to connect.

    Attributes:
        history_: The run as a trustlab :class:`~trustlab.federated.simulation.History` (node ids
            as client ids): per round the sampled node ids, the inner strategy's info (accepted,
            rejected, weights, excluded with reasons) and the centralised evaluation.
        partitions_: ``{node_id: partition_id}`` as the nodes reported it (bookkeeping for the
            experiment's ground truth only; the strategy never uses it).
    """

    def __init__(self, inner: Strategy, fraction_train: float = 1.0, min_train_nodes: int = 1,
                 min_available_nodes: int = 1, seed: int = 0, wait_timeout: float = 300.0) -> None:
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train must be in (0, 1], got {fraction_train}")
        self.inner = inner
        self.fraction_train, self.min_train_nodes = fraction_train, min_train_nodes
        self.min_available_nodes, self.seed, self.wait_timeout = min_available_nodes, seed, wait_timeout
        self.current_: NDArrays = []
        self.history_ = History(parameters=[])
        self.partitions_: dict[int, int] = {}
        self._pending: RoundLog | None = None
        self._t0 = 0.0

    def summary(self) -> None:
        """Log the configuration."""
        log.info("MessageStrategy(%s): fraction_train=%.2f, min_train_nodes=%d, seed=%d", type(self.inner).__name__,
                 self.fraction_train, self.min_train_nodes, self.seed)

    def _node_ids(self, grid: Grid) -> list[int]:
        t0 = time.perf_counter()
        while True:
            ids = sorted(int(n) for n in grid.get_node_ids())
            if len(ids) >= self.min_available_nodes:
                return ids
            if time.perf_counter() - t0 > self.wait_timeout:
                raise TimeoutError(f"only {len(ids)} of {self.min_available_nodes} nodes connected")
            time.sleep(0.1)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample node ids, ask the inner strategy for their configs, one train Message each."""
        self._t0 = time.perf_counter()
        self.current_ = arrays.to_numpy_ndarrays()
        ids = self._node_ids(grid)
        rng = np.random.default_rng(derive_seed(self.seed, "sample", server_round))
        selected = sample_clients(ids, self.fraction_train, self.min_train_nodes, rng)
        cfgs = self.inner.configure_train(server_round, self.current_, selected)
        base = dict(config)
        self._pending = RoundLog(round=server_round, selected=list(selected))
        return [Message(RecordDict({ARRAYS: arrays, CONFIG: _config_record(
            {**base, "server-round": server_round, "server_round": server_round, **cfg})}),
            dst_node_id=int(nid), message_type="train") for nid, cfg in cfgs.items()]

    def replies_to_fit(self, replies: Iterable[Message]) -> tuple[list[FitReply], dict[int, str]]:
        """Parse reply Messages into :class:`FitReply` keyed by the *sender's node id*.

        Replies carrying an error or lacking arrays/metrics are returned as excluded with the reason
        (the numeric screening, NaN and shapes, happens in the inner strategy).
        """
        out: list[FitReply] = []
        bad: dict[int, str] = {}
        for msg in replies:
            nid = int(msg.metadata.src_node_id)
            if msg.has_error():
                bad[nid] = f"client error: {msg.error.reason}"
            elif ARRAYS not in msg.content.array_records or METRICS not in msg.content.metric_records:
                bad[nid] = f"reply lacks the {ARRAYS!r} ArrayRecord or the {METRICS!r} MetricRecord"
            else:
                metrics = dict(msg.content[METRICS])
                if "partition-id" in metrics:
                    self.partitions_[nid] = int(metrics["partition-id"])
                try:
                    params = msg.content[ARRAYS].to_numpy_ndarrays()
                except Exception as exc:  # noqa: BLE001 - a malformed payload is excluded, not fatal
                    bad[nid] = f"arrays could not be decoded ({exc})"
                    continue
                out.append(FitReply(nid, params, int(metrics.get(NUM_EXAMPLES, 1)), metrics))
            if nid in bad:
                log.warning("node %d excluded from aggregation: %s", nid, bad[nid])
        out.sort(key=lambda r: r.client_id)
        return out, bad

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Run the inner strategy on the replies; keep the round's log."""
        fit, bad = self.replies_to_fit(replies)
        new, info = self.inner.aggregate_train(server_round, self.current_, fit)
        info = dict(info)
        info["excluded"] = {**bad, **info.get("excluded", {})}
        entry = self._pending or RoundLog(round=server_round, selected=[r.client_id for r in fit])
        entry.train = info
        self._pending = entry
        self.current_ = new
        metrics = {"accepted": len(info.get("accepted", [])), "rejected": len(info.get("rejected", [])),
                   "excluded": len(info["excluded"])}
        return _arrays(new), MetricRecord(metrics)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No federated evaluation (the server evaluates centrally)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """No federated evaluation."""
        return None

    def run(self, grid: Grid, initial: NDArrays, num_rounds: int,
            evaluate_fn: Callable[[int, NDArrays], dict[str, Any]] | None = None,
            timeout: float = 3600.0) -> History:
        """Flower's ``Strategy.start`` with a trustlab ``evaluate_fn``; returns the trustlab History."""
        self.inner.initialize([np.array(p, copy=True) for p in initial])
        self.history_ = History(parameters=[np.array(p, copy=True) for p in initial])

        def flower_eval(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            params = arrays.to_numpy_ndarrays()
            res = dict(evaluate_fn(rnd, params)) if evaluate_fn is not None else {}
            entry = self._pending if (rnd > 0 and self._pending is not None) else RoundLog(round=rnd, selected=[])
            entry.centralized = res
            self._close(entry)
            return _metric_record(res) if res else None

        result = self.start(grid, _arrays(initial), num_rounds=num_rounds, timeout=timeout, evaluate_fn=flower_eval)
        self.history_.parameters = result.arrays.to_numpy_ndarrays() if result.arrays is not None else self.current_
        return self.history_

    def _close(self, entry: RoundLog) -> None:
        if entry.round > 0:
            entry.seconds = time.perf_counter() - self._t0
        self.history_.rounds.append(entry)
        self._pending = None


def make_client_app(client_fn: Callable[[int, Context], Client]) -> ClientApp:
    """A ``ClientApp`` whose train handler runs ``client_fn(partition_id, context).fit``.

    The partition id comes from the node's ``node_config["partition-id"]`` (set by the Simulation
    Engine, or by ``flower-supernode --node-config``). The reply carries the local model as the
    ``"arrays"`` ArrayRecord and ``num-examples``, the numeric client metrics and the partition id
    (bookkeeping) in the ``"metrics"`` MetricRecord.
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config.get("partition-id", 0))
        client = client_fn(pid, context)
        params = msg.content[ARRAYS].to_numpy_ndarrays()
        reply = client.fit(params, dict(msg.content[CONFIG]))
        metrics = {**reply.metrics, NUM_EXAMPLES: int(reply.num_examples), "partition-id": pid}
        return Message(RecordDict({ARRAYS: _arrays(reply.parameters), METRICS: _metric_record(metrics)}),
                       reply_to=msg)

    return app


@dataclass
class ServerSetup:
    """What a ServerApp needs to run one experiment.

    Attributes:
        strategy: The Message strategy.
        initial: Initial global parameters.
        num_rounds: Rounds.
        evaluate_fn: Centralised evaluation ``f(round, parameters) -> metrics``.
        on_done: Called with the final History (e.g. to save the model).
    """

    strategy: MessageStrategy
    initial: NDArrays
    num_rounds: int
    evaluate_fn: Callable[[int, NDArrays], dict[str, Any]] | None = None
    on_done: Callable[[History], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_server_app(setup_fn: Callable[[Context], ServerSetup]) -> ServerApp:
    """A ``ServerApp`` whose main builds the experiment with ``setup_fn(context)`` and runs it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        s = setup_fn(context)
        hist = s.strategy.run(grid, s.initial, s.num_rounds, s.evaluate_fn)
        if s.on_done is not None:
            s.on_done(hist)

    return app


_INLINE_ONLY = ("InlineGrid delivers Messages synchronously through send_and_receive (what trustlab's strategies "
                "call); push/pull and create_message need a SuperLink: use the flower-sim engine")


class InlineGrid(Grid):  # type: ignore[misc]
    """A ``Grid`` that delivers each Message to a ClientApp in this process (no Ray, no network).

    Node ids are drawn at random (like Flower's), each node has ``node_config["partition-id"]``.

    Args:
        client_app: The ClientApp.
        num_nodes: Number of virtual nodes.
        seed: Seed of the node ids.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, seed: int = 0) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        for attr, value in (("_run_id", 0), ("_task_id", 0), ("_node_id", 1)):  # what the SuperLink sets
            if getattr(TaskIdentity, attr) is None:
                setattr(TaskIdentity, attr, value)
        self.client_app = client_app
        ids = np.random.default_rng(seed).choice(1 << 62, size=num_nodes, replace=False) + 1
        self.nodes = {int(n): i for i, n in enumerate(ids)}

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:  # noqa: D102
        out = []
        for m in messages:
            nid = int(m.metadata.dst_node_id)
            ctx = Context(run_id=0, node_id=nid, node_config={"partition-id": self.nodes[nid],
                                                              "num-partitions": len(self.nodes)},
                          state=RecordDict(), run_config={})
            out.append(self.client_app(m, ctx))
        return out

    # the abstract Grid API not needed in-process
    def set_run(self, run_id: int) -> None:  # noqa: D102
        return None

    @property
    def run(self) -> Any:  # noqa: D102
        return None

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102
        raise TypeError(_INLINE_ONLY)

    def get_nodes(self) -> Iterable[Any]:  # noqa: D102
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        raise TypeError(_INLINE_ONLY)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        raise TypeError(_INLINE_ONLY)


def run_flower_simulation(server_app: ServerApp, client_app: ClientApp, num_supernodes: int,
                          num_cpus: int | None = None, client_cpus: float = 1.0) -> None:
    """Run a ServerApp/ClientApp pair on Flower's Simulation Engine (Ray backend), telemetry off.

    Args:
        server_app: The ServerApp (runs in a thread of this process).
        client_app: The ClientApp (runs in Ray actors, one per ``client_cpus`` CPUs).
        num_supernodes: Number of virtual SuperNodes (clients).
        num_cpus: CPUs given to Ray (default: all visible, at most 2 on this project's machine).
        client_cpus: CPUs per ClientApp actor.

    Raises:
        UserError: Ray (``flwr[simulation]``) is not installed.
    """
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise UserError("Flower's Simulation Engine needs Ray, which is not installed",
                        "pip install 'trustlab[fed]' (flwr[simulation]) or use --engine inprocess") from exc
    from flwr.simulation import run_simulation

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    cpus = num_cpus or max(1, min(os.cpu_count() or 1, 2))
    backend = {"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False}}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_supernodes,
                       backend_config=backend)


def relabel(hist: History, mapping: dict[Any, int]) -> History:
    """A copy of ``hist`` with node ids replaced by partition ids (selected, accepted, weights, excluded)."""
    def m(c: Any) -> Any:
        return mapping.get(c, c)

    rounds = []
    for r in hist.rounds:
        t = dict(r.train)
        for k in ("accepted", "rejected"):
            if k in t:
                t[k] = [m(c) for c in t[k]]
        for k in ("weights", "excluded"):
            if k in t:
                t[k] = {m(c): v for c, v in t[k].items()}
        rounds.append(RoundLog(r.round, [m(c) for c in r.selected], t, r.evaluate, r.centralized, r.seconds))
    return History(hist.parameters, rounds)


def run_on_flower(strategy: Strategy, clients: Sequence[Client], init: NDArrays, rounds: int, fraction_fit: float,
                  evaluate_fn: Callable[[int, NDArrays], dict[str, Any]], seed: int,
                  inline: bool = False,
                  client_fn: Callable[[int, Context], Client] | None = None) -> tuple[History, dict[int, int]]:
    """Train with Flower's ServerApp/ClientApp; return the History in partition ids and ``{node id: partition}``.

    Args:
        strategy: The trustlab server strategy (keyed by node id inside Flower).
        clients: One client per partition (partition id = list index = ``cid``).
        init: Initial global parameters.
        rounds: Rounds.
        fraction_fit: Fraction of nodes sampled per round.
        evaluate_fn: Centralised evaluation.
        seed: Sampling seed.
        inline: Deliver messages in this process (:class:`~trustlab.federated.flower.InlineGrid`)
            instead of the Simulation Engine.
        client_fn: ``(partition_id, context) -> client``, replacing the lookup in ``clients``. The
            Simulation Engine pickles the ClientApp (with everything its closure holds) for *every*
            message, so for large populations pass a small picklable factory that rebuilds or caches
            the client inside the worker instead of a closure over all clients' data.
    """
    if client_fn is None:
        by_pid = {int(c.cid): c for c in clients}

        def client_fn(pid: int, context: Any) -> Client:
            return by_pid[pid]

    client_app = make_client_app(client_fn)
    strat = MessageStrategy(strategy, fraction_train=fraction_fit, min_available_nodes=len(clients), seed=seed)
    if inline:
        hist = strat.run(InlineGrid(client_app, len(clients), seed), init, rounds, evaluate_fn)
    else:
        server_app = make_server_app(lambda ctx: ServerSetup(strat, init, rounds, evaluate_fn))
        run_flower_simulation(server_app, client_app, len(clients))
        hist = strat.history_
        if len(hist.rounds) != rounds + 1:
            raise RuntimeError(f"the Flower simulation finished {max(len(hist.rounds) - 1, 0)} of {rounds} rounds "
                               "(see the Flower log above)")
    return relabel(hist, strat.partitions_), dict(strat.partitions_)
