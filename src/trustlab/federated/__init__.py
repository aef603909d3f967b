"""Shared federated-learning core: strategies, pure aggregators, the in-process engine and Flower's Message API.

Public API (stable):

- :mod:`trustlab.federated.aggregate`: pure rules over an update matrix ``(K, d)`` returning
  :class:`~trustlab.federated.aggregate.Aggregate` (``update``, per-client ``weights``, ``accepted``):
  ``fedavg``, ``median``, ``trimmed_mean``, ``krum``, ``multikrum``, ``bulyan``, ``flame`` (+ ``flame_filter``),
  ``fltrust``, ``foolsgold`` (+ ``foolsgold_weights``), helpers ``cosine_matrix``,
  ``pairwise_sq_distances``, ``krum_scores``. Median, trimmed mean, Krum, Multi-Krum and Bulyan are
  tested equal to Flower's own strategies.
- :mod:`trustlab.federated.strategy`: ``Strategy`` (``configure_train``/``aggregate_train``/
  ``configure_evaluate``/``aggregate_evaluate``, Flower's names), ``UpdateStrategy`` (subclass and
  implement ``aggregate_updates`` to plug any rule; replies with NaN/inf or wrongly shaped arrays are
  excluded with a logged reason by ``screen_replies``), ready strategies ``FedAvg``, ``FedMedian``,
  ``FedTrimmedMean``, ``Krum``, ``MultiKrum``, ``Bulyan``, ``Flame``, ``FLTrust``, ``FoolsGold``; the message
  types ``FitReply``/``EvaluateReply``; ``flatten``/``unflatten`` of ``NDArrays`` (list of NumPy arrays).
- :mod:`trustlab.federated.simulation`: ``simulate(strategy, clients, initial_parameters, num_rounds,
  fraction_fit=1.0, evaluate_fn=None, seed=0) -> History``, the sequential in-process engine; clients
  are any object with ``cid``, ``state`` and ``fit(parameters, config) -> FitReply``;
  ``get_parameters``/``set_parameters`` move a torch module to/from ``NDArrays``.
- :mod:`trustlab.federated.flower` (extra ``fed``): Flower's Message API. ``MessageStrategy`` runs any
  strategy above as a ``flwr.serverapp.strategy.Strategy`` keyed by **node id**; ``make_server_app`` /
  ``make_client_app`` build ``ServerApp`` / ``ClientApp``; ``run_on_flower`` trains on the Simulation
  Engine (``run_flower_simulation``, Ray) or in process (``InlineGrid``).
- :mod:`trustlab.federated.cli`: ``trustlab fed nadafd|fvlfp`` (engine, population, rounds, outputs).

Example:
    >>> import numpy as np
    >>> from trustlab.federated import aggregate
    >>> aggregate.median(np.array([[0.0], [1.0], [9.0]])).update.tolist()
    [1.0]
"""

from trustlab.federated import aggregate
from trustlab.federated.simulation import Client, History, RoundLog, get_parameters, set_parameters, simulate
from trustlab.federated.strategy import (
    Bulyan,
    EvaluateReply,
    FedAvg,
    FedMedian,
    FedTrimmedMean,
    FitReply,
    Flame,
    FLTrust,
    FoolsGold,
    Krum,
    MultiKrum,
    NDArrays,
    Strategy,
    UpdateStrategy,
    flatten,
    screen_replies,
    unflatten,
)

__all__ = [
    "Bulyan",
    "Client",
    "EvaluateReply",
    "FLTrust",
    "FedAvg",
    "FedMedian",
    "FedTrimmedMean",
    "FitReply",
    "Flame",
    "FoolsGold",
    "History",
    "Krum",
    "MultiKrum",
    "NDArrays",
    "RoundLog",
    "Strategy",
    "UpdateStrategy",
    "aggregate",
    "flatten",
    "get_parameters",
    "screen_replies",
    "set_parameters",
    "simulate",
    "unflatten",
]
