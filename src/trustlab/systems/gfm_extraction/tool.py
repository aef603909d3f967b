"""``extract``: steal a victim GFM's graph encoder on the user's own graph, within a query budget.

One code path for the CLI (``trustlab extract``) and Python::

    from trustlab.systems.gfm_extraction.tool import extract, load_surrogate
    report = extract(victim, "my_graph/", budget=0.1, out="stolen/")   # victim: VictimService / HTTPVictim / GFM
    enc = load_surrogate("stolen/")                                    # a torch nn.Module: enc(x, edge_index)

The victim is anything with ``embed(x, edge_index, nodes)`` and ``embed_text(text_emb)`` (a
:class:`~trustlab.systems.gfm_extraction.method.VictimService`, an
:class:`~trustlab.systems.gfm_extraction.service.HTTPVictim`, or a :class:`GFM`, which is wrapped).
Every call to the victim goes through :class:`BudgetedVictim`, which refuses any query beyond
``budget`` training embeddings plus the optional evaluation share, so the budget holds whatever the victim does.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.systems.gfm_extraction.baselines import ATTACKS
from trustlab.systems.gfm_extraction.method import (
    ENCODER_ARCHS,
    GFM,
    GraphEncoder,
    QueryBudgetExceeded,
    VictimService,
)
from trustlab.systems.gfm_extraction.scoring import score_embeddings
from trustlab.utils.io import atomic_write_json, load_tensors, save_tensors
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed, make_generator

log = get_logger(__name__)


class BudgetedVictim:
    """Wraps a victim and refuses (raising :class:`QueryBudgetExceeded`) any query past ``limit`` node embeddings."""

    def __init__(self, victim: Any, limit: int) -> None:
        self.victim, self.limit, self.queries = victim, int(limit), 0

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        n = int(nodes.numel())
        if self.queries + n > self.limit:
            raise QueryBudgetExceeded(f"query of {n} nodes refused: {self.queries} of {self.limit} spent", "lower it")
        out = self.victim.embed(x, edge_index, nodes)
        self.queries += n
        if out.shape[0] != n:
            raise UserError(f"the victim returned {out.shape[0]} embeddings for {n} nodes", "check the victim")
        return out

    def embed_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        return self.victim.embed_text(text_emb)


def parse_budget(budget: float, n_nodes: int) -> int:
    """``0 < budget <= 1``: a fraction of the graph's nodes; an integer ``> 1``: a node count."""
    if budget <= 0:
        raise UserError(f"--budget {budget:g} must be > 0", "use a fraction such as 0.1 or a count such as 40")
    if budget <= 1:
        k = int(round(budget * n_nodes))
    elif float(budget).is_integer():
        k = int(budget)
    else:
        raise UserError(f"--budget {budget:g} is neither a fraction in (0, 1] nor a whole count", "use 0.1 or 40")
    if k < 1:
        raise UserError(f"--budget {budget:g} allows no query on a graph of {n_nodes} nodes", "raise it")
    return k


def load_factory(spec: str) -> Any:
    """``"package.module:factory"`` -> the object ``factory()`` returns (a victim)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise UserError(f"--victim {spec!r} is not MODULE:FACTORY", "write e.g. mypkg.victims:load_victim")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise UserError(f"cannot import {module!r} for --victim ({exc})", "check the module is on PYTHONPATH") from exc
    except AttributeError as exc:
        raise UserError(f"module {module!r} has no {attr!r}", "name an existing factory function") from exc
    victim = fn() if callable(fn) else fn
    if isinstance(victim, GFM):
        victim = VictimService(victim)
    if not (hasattr(victim, "embed") and hasattr(victim, "embed_text")):
        raise UserError(f"{spec} returned {type(victim).__name__}, which lacks embed/embed_text",
                        "return a GFM, a VictimService or an object with embed(x, edge_index, nodes) and embed_text")
    return victim


def extract(victim: Any, graph: Any, budget: float = 0.1, out: str | Path | None = None, arch: str = "sage",
            hidden: int = 256, epochs: int = 60, lr: float = 5e-3, residual: bool = False, eval_frac: float = 0.1,
            batch: int = 50, seed: int = 0, encoder: Any = None, text_model: str | None = None) -> dict[str, Any]:
    """Query the victim on the user's graph within ``budget``, train a surrogate by embedding regression, save it.

    Args:
        victim: The victim (see module docstring).
        graph: A graph folder (``nodes.jsonl``, ``edges.csv``, ``classes.json``; see ``data.graph_from_files``)
            or a loaded :class:`~trustlab.systems.gfm_extraction.data.Graph`.
        budget: Training queries: a fraction of the graph's nodes (``<= 1``) or a count.
        out: Output folder for ``surrogate.safetensors``, ``surrogate.json`` and ``report.json`` (None: nothing saved).
        arch / hidden / epochs / lr / residual: The surrogate (the paper's attack: a plain encoder).
        eval_frac: Extra queries, as a fraction of the nodes, on held-out nodes to measure fidelity to the victim
            and to the text prior (0: no evaluation queries).
        batch: Nodes per victim request.
        seed: Seed of the node sampling and the surrogate initialisation.
        encoder / text_model: The public text encoder for node features (default: packaged MiniLM).

    Returns:
        The report (also written to ``out/report.json``).
    """
    from trustlab.systems.gfm_extraction.data import Graph, graph_from_files
    from trustlab.systems.gfm_extraction.experiment import query_in_batches

    if arch not in ENCODER_ARCHS:
        raise UserError(f"unknown --arch {arch!r}", f"use one of {', '.join(ENCODER_ARCHS)}")
    if epochs < 1 or hidden < 1 or lr <= 0 or batch < 1:
        raise UserError("--epochs, --hidden and --batch must be >= 1 and --lr > 0", "fix the surrogate settings")
    if not 0 <= eval_frac < 1:
        raise UserError(f"--eval {eval_frac:g} must be in [0, 1)", "use e.g. 0.1, or 0 for no evaluation queries")
    if isinstance(victim, GFM):
        victim = VictimService(victim)
    if not isinstance(graph, Graph):
        if encoder is None:
            from trustlab.models.minilm import SentenceEncoder

            encoder = SentenceEncoder(text_model)
        graph = graph_from_files(graph, encoder, test_frac=0.0, seed=seed)
    n = graph.x.shape[0]
    k = parse_budget(budget, n)
    k_eval = int(round(eval_frac * n))
    if k + k_eval > n:
        raise UserError(f"budget {k} + evaluation {k_eval} queries exceed the graph's {n} nodes",
                        "lower --budget or --eval")
    perm = torch.randperm(n, generator=make_generator(derive_seed(seed, "extract-nodes")))
    train_nodes, eval_nodes = perm[:k].sort().values, perm[k : k + k_eval].sort().values
    guard = BudgetedVictim(victim, k + k_eval)
    t0 = time.perf_counter()
    q_nodes, q_targets = query_in_batches(guard, graph.x, graph.edge_index, train_nodes, batch)
    query_s = time.perf_counter() - t0
    atk = ATTACKS["regression"](arch, hidden, epochs, lr, seed=derive_seed(seed, "surrogate"), residual=residual)
    atk.fit(graph.x, graph.edge_index, q_nodes, q_targets)
    report: dict[str, Any] = {
        "graph": graph.name, "nodes": n, "edges": int(graph.edge_index.shape[1] // 2), "budget": k,
        "train_queries": int(q_nodes.numel()), "eval_queries": 0, "query_s": query_s, "train_s": atk.train_time_s_,
        "surrogate": {"arch": arch, "hidden": hidden, "epochs": epochs, "lr": lr, "residual": residual, "seed": seed},
    }
    if k_eval:
        before = guard.queries
        e_nodes, v_emb = query_in_batches(guard, graph.x, graph.edge_index, eval_nodes, batch)
        report["eval_queries"] = guard.queries - before
        v_cls = guard.embed_text(graph.prompts)
        s_emb = atk.embed(graph.x, graph.edge_index)[e_nodes]
        report["eval"] = score_embeddings(s_emb, v_emb, graph.x[e_nodes], v_cls, v_cls, graph.prompts,
                                          graph.y[e_nodes], seed=derive_seed(seed, "extract-boot"))
        report["eval"]["nodes"] = int(e_nodes.numel())
    report["total_queries"] = guard.queries
    if out is not None:
        save_surrogate(out, atk.surrogate_, {"arch": arch, "hidden": hidden, "in_dim": int(graph.x.shape[1]),
                                             "out_dim": int(q_targets.shape[1]), "residual": residual})
        atomic_write_json(Path(out) / "report.json", report)
    return report


def save_surrogate(out: str | Path, model: GraphEncoder, spec: dict[str, Any]) -> Path:
    """Write ``surrogate.safetensors`` (weights, spec in metadata) and ``surrogate.json`` (the spec)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / "surrogate.safetensors", {k: v.detach().clone() for k, v in model.state_dict().items()},
                 {"spec": json.dumps(spec)})
    atomic_write_json(out / "surrogate.json", {"format": "trustlab-gfm-surrogate/1", **spec,
                                               "weights": "surrogate.safetensors",
                                               "usage": "load_surrogate(folder)(x, edge_index) -> embeddings"})
    return out


def load_surrogate(folder: str | Path) -> GraphEncoder:
    """Rebuild a saved surrogate encoder (eval mode): ``enc(x, edge_index)`` gives its (unnormalised) embeddings."""
    folder = Path(folder)
    spec_path, w = folder / "surrogate.json", folder / "surrogate.safetensors"
    if not spec_path.is_file() or not w.is_file():
        raise UserError(f"{str(folder)!r} holds no saved surrogate", "pass the --out folder of trustlab extract")
    spec = json.loads(spec_path.read_text())
    enc = GraphEncoder(spec["arch"], spec["in_dim"], spec["hidden"], spec["out_dim"], residual=spec["residual"])
    enc.load_state_dict(load_tensors(w)[0])
    return enc.eval()
