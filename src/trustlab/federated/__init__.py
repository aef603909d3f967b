"""Shared federated-learning core: Flower-shaped strategies, pure aggregators, an in-process simulator.

Public API (stable):

- :mod:`trustlab.federated.aggregate`: pure rules over an update matrix ``(K, d)`` returning
  :class:`~trustlab.federated.aggregate.Aggregate` (``update``, per-client ``weights``, ``accepted``):
  ``fedavg``, ``median``, ``trimmed_mean``, ``krum``, ``multikrum``, ``flame`` (+ ``flame_filter``),
  ``fltrust``, ``foolsgold`` (+ ``foolsgold_weights``), helpers ``cosine_matrix``,
  ``pairwise_sq_distances``, ``krum_scores``.
- :mod:`trustlab.federated.strategy`: ``Strategy`` (``configure_train``/``aggregate_train``/
  ``configure_evaluate``/``aggregate_evaluate``, Flower's names), ``UpdateStrategy`` (subclass and
  implement ``aggregate_updates`` to plug any rule), ready strategies ``FedAvg``, ``FedMedian``,
  ``FedTrimmedMean``, ``Krum``, ``MultiKrum``, ``Flame``, ``FLTrust``, ``FoolsGold``; the message types
  ``FitReply``/``EvaluateReply``; ``flatten``/``unflatten`` of ``NDArrays`` (list of NumPy arrays).
- :mod:`trustlab.federated.simulation`: ``simulate(strategy, clients, initial_parameters, num_rounds,
  fraction_fit=1.0, evaluate_fn=None, seed=0) -> History``; clients are any object with ``cid``,
  ``state`` (dict kept across rounds) and ``fit(parameters, config) -> FitReply``;
  ``get_parameters``/``set_parameters`` move a torch module to/from ``NDArrays``.
- :mod:`trustlab.federated.flower` (extra ``fed``): ``to_flower_strategy``, ``to_flower_client`` and
  ``run_flower_loopback`` run any of the above under Flower's own server and clients.

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
