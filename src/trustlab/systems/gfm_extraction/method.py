"""The victim GFM (GraphCLIP-style, scaled down) and the paper's attack: supervised regression of graph embeddings.

Paper: Xu et al., "A Systematic Study of Model Extraction Attacks on Graph Foundation Models",
arXiv:2511.11912. The attacker queries a black-box service that returns graph embeddings of the
subgraphs it sends, trains its own encoder to regress them (normalised MSE), then does zero-shot
node classification with the victim's (public) text encoder: ``argmax_c cos(g(v), t_c)``. It never
uses text-graph contrastive pretraining data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.errors import UserError, require
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------
def zero_shot_predict(graph_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Zero-shot labels: ``argmax_c cos(graph_emb_v, class_emb_c)``.

    Shape:
        graph_emb ``(N, d)``, class_emb ``(C, d)`` -> ``(N,)`` long.
    """
    return (F.normalize(graph_emb, dim=-1) @ F.normalize(class_emb, dim=-1).T).argmax(dim=-1)


def zero_shot_proba(graph_emb: torch.Tensor, class_emb: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Zero-shot class probabilities ``softmax(scale * cos)`` (GraphCLIP uses scale 100)."""
    return torch.softmax(scale * F.normalize(graph_emb, dim=-1) @ F.normalize(class_emb, dim=-1).T, dim=-1)


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of ``a`` and ``b`` (CLIP)."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def normalized_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||p̂ - t̂||² = 2 - 2 cos(p, t)``, averaged: regression on directions (zero-shot uses only those)."""
    return (F.normalize(pred, dim=-1) - F.normalize(target, dim=-1)).pow(2).sum(-1).mean()


def fidelity(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of nodes where two models predict the same label."""
    return float((pred_a == pred_b).float().mean())


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matched rows."""
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def drop_edges(edge_index: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each (directed) edge with probability ``1 - p``."""
    keep = torch.rand(edge_index.shape[1], generator=generator) >= p
    return edge_index[:, keep]


def induced_subgraph(edge_index: torch.Tensor, nodes: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Edges of ``edge_index`` whose two ends are both in ``nodes`` (ids unchanged)."""
    mask = torch.zeros(num_nodes, dtype=torch.bool)
    mask[nodes] = True
    return edge_index[:, mask[edge_index[0]] & mask[edge_index[1]]]


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------
ENCODER_ARCHS = ("sage", "gcn", "gat", "meanmlp", "mlp")


def neighbour_mean(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``mean_{u -> v} x_u`` per node ``v`` (zeros for isolated nodes)."""
    agg = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
    deg = torch.zeros(x.shape[0], device=x.device).index_add_(
        0, edge_index[1], torch.ones(edge_index.shape[1], device=x.device))
    return agg / deg.clamp_min(1).unsqueeze(1)


class GraphEncoder(nn.Module):
    """Two message-passing layers + readout ``Linear([h_v ; x_v]) -> out_dim`` (GraphCLIP's concat readout).

    With ``residual`` (default, needs ``in_dim == out_dim``) the output is ``x_v + readout(...)`` with the
    readout initialised to zero: the encoder starts as the text-only embedding and learns a graph-aware
    correction. This keeps small CPU-trained encoders from destroying the frozen text space (measured:
    a from-scratch readout gave 0.43 zero-shot accuracy against 0.88 for text only at smoke scale).

    Args:
        arch: ``sage``, ``gcn``, ``gat`` (torch-geometric), ``meanmlp`` (features of the node and the mean of
            its neighbours, then an MLP; no learned message passing) or ``mlp`` (the node's own features
            only: no neighbour aggregation at all, a genuinely different model family).
        in_dim: Node feature width.
        hidden: Hidden width.
        out_dim: Embedding width (the text space).
        residual: ``x + readout(...)`` with a zero-initialised readout (starts as the text prior); without
            it the readout is initialised at random (PyTorch default) and the output is ``readout(...)``.
        propagate: With ``residual``, the base is the propagated text ``x_v + mean_{u in N(v)} x_u``
            instead of ``x_v`` (starts at one step of neighbourhood smoothing, not at the text prior).
    """

    def __init__(self, arch: str, in_dim: int, hidden: int, out_dim: int, residual: bool = True,
                 propagate: bool = False) -> None:
        super().__init__()
        if residual and in_dim != out_dim:
            raise ValueError("residual encoders need in_dim == out_dim")
        if propagate and not residual:
            raise ValueError("propagate needs residual=True")
        self.residual, self.propagate = residual, propagate
        if arch not in ENCODER_ARCHS:
            raise ValueError(f"unknown arch {arch!r}")
        if hidden < 1 or in_dim < 1 or out_dim < 1:
            raise ValueError("widths must be positive")
        self.arch = arch
        if arch == "meanmlp":
            self.layers = nn.ModuleList([nn.Linear(2 * in_dim, hidden), nn.Linear(hidden, hidden)])
        elif arch == "mlp":
            self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden)])
        else:
            pyg = require("torch_geometric.nn", "graph")
            conv = {"sage": lambda i, o: pyg.SAGEConv(i, o),
                    "gcn": lambda i, o: pyg.GCNConv(i, o),
                    "gat": lambda i, o: pyg.GATConv(i, o // 4, heads=4)}[arch]
            self.layers = nn.ModuleList([conv(in_dim, hidden), conv(hidden, hidden)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
        self.readout = nn.Linear(hidden + in_dim, out_dim)
        if residual:
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = x
        if self.arch == "mlp":  # the node alone: edge_index is ignored
            for lin, norm in zip(self.layers, self.norms, strict=True):
                h = F.gelu(norm(lin(h)))
        elif self.arch == "meanmlp":
            h = torch.cat([x, neighbour_mean(x, edge_index)], dim=-1)
            for lin, norm in zip(self.layers, self.norms, strict=True):
                h = F.gelu(norm(lin(h)))
        else:
            for conv, norm in zip(self.layers, self.norms, strict=True):
                h = F.gelu(norm(conv(h, edge_index)))
        out = self.readout(torch.cat([h, x], dim=-1))
        if not self.residual:
            return out
        return (x + neighbour_mean(x, edge_index) if self.propagate else x) + out


class GFM(nn.Module):
    """A tiny CLIP-style graph foundation model: graph encoder + frozen text encoder with a projection.

    Text embeddings come from a frozen sentence encoder (MiniLM); the victim has a linear projection
    (initialised to identity) on top, learned unless ``learn_text_proj`` is false.

    Args:
        arch: Graph encoder architecture.
        dim: Text embedding width.
        hidden: Graph encoder width.
        residual: Residual graph readout (starts at the text prior) or a randomly initialised readout.
        learn_text_proj: Train the text projection (else it stays the identity).
        propagate: Residual on the propagated text (see :class:`GraphEncoder`).
    """

    def __init__(self, arch: str, dim: int, hidden: int, residual: bool = True, learn_text_proj: bool = True,
                 propagate: bool = False) -> None:
        super().__init__()
        self.graph = GraphEncoder(arch, dim, hidden, dim, residual=residual, propagate=propagate)
        self.text_proj = nn.Linear(dim, dim)
        nn.init.eye_(self.text_proj.weight)
        nn.init.zeros_(self.text_proj.bias)
        self.text_proj.requires_grad_(learn_text_proj)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))

    def embed_graph(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.graph(x, edge_index), dim=-1)

    def embed_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_emb), dim=-1)


def pretrain_gfm(model: GFM, graphs: list, summary_emb: list[torch.Tensor], epochs: int, lr: float,
                 generator: torch.Generator, batch: int = 256, feat_mask: float = 0.3, edge_drop: float = 0.2,
                 on_epoch: Callable[[int], None] | None = None) -> float:
    """CLIP pretraining of the victim on (subgraph, summary) pairs with GraphCLIP's augmentation.

    ``on_epoch(epoch)`` (optional) is called after each epoch (1-based), e.g. to evaluate a development split.

    Returns:
        Wall-clock seconds (the victim's training cost).
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-5)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        for g, s in zip(graphs, summary_emb, strict=True):
            ei = drop_edges(g.edge_index, edge_drop, generator)
            mask = (torch.rand(g.x.shape[1], generator=generator) >= feat_mask).float()
            ge = model.graph(g.x * mask, ei)
            idx = torch.randperm(g.x.shape[0], generator=generator)[:batch]
            loss = clip_loss(ge[idx], model.text_proj(s[idx]), model.logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1)
            model.train()
    model.eval()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# The black-box service
# ----------------------------------------------------------------------------------------------
class QueryBudgetExceeded(UserError):
    """The service refused a query: the caller's budget is spent."""


@dataclass
class Defense:
    """Output defenses of the service.

    Attributes:
        noise_sigma: Gaussian noise added to returned (normalised) embeddings, then re-normalised.
        round_decimals: Round returned embeddings to this many decimals (None: off).
        rate_limit: Maximum embeddings returned per user (query-rate monitoring); None: unlimited.
    """

    noise_sigma: float = 0.0
    round_decimals: int | None = None
    rate_limit: int | None = None


class VictimService:
    """Black-box API around a :class:`GFM`: graph embeddings of queried nodes, text embeddings of prompts.

    Every returned node embedding counts against ``budget`` (and the defense's rate limit); a query that
    would exceed it raises :class:`QueryBudgetExceeded` and returns nothing.

    Args:
        model: The victim.
        budget: Maximum node embeddings returned (None: unlimited).
        defense: Output defenses.
        seed: Seed of the defense noise.
    """

    def __init__(self, model: GFM, budget: int | None = None, defense: Defense | None = None, seed: int = 0) -> None:
        if budget is not None and budget < 0:
            raise ValueError("budget must be >= 0")
        self.model = model.eval()
        self.defense = defense or Defense()
        limits = [b for b in (budget, self.defense.rate_limit) if b is not None]
        self.budget = min(limits) if limits else None
        self.queries = 0
        self.refused = 0
        self._gen = torch.Generator().manual_seed(seed)

    def _protect(self, e: torch.Tensor) -> torch.Tensor:
        d = self.defense
        if d.noise_sigma > 0:
            e = F.normalize(e + d.noise_sigma * torch.randn(e.shape, generator=self._gen), dim=-1)
        if d.round_decimals is not None:
            e = torch.round(e * 10**d.round_decimals) / 10**d.round_decimals
        return e

    @torch.no_grad()
    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``nodes``, each computed on the subgraph the caller sent (``x``, ``edge_index``)."""
        n = int(nodes.numel())
        if self.budget is not None and self.queries + n > self.budget:
            self.refused += n
            raise QueryBudgetExceeded(
                f"query of {n} nodes refused: {self.queries} of {self.budget} embeddings already returned",
                "lower the query count or raise the budget",
            )
        self.queries += n
        return self._protect(self.model.embed_graph(x, edge_index)[nodes])

    @torch.no_grad()
    def embed_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """The victim text tower (public: zero-shot needs it); not counted as graph queries."""
        return self.model.embed_text(text_emb)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor,
                      prompt_emb: torch.Tensor) -> torch.Tensor:
        """A prediction-only API: zero-shot class probabilities (used by the distillation baseline)."""
        e = self.embed(x, edge_index, nodes)
        return zero_shot_proba(e, self.embed_text(prompt_emb))


# ----------------------------------------------------------------------------------------------
# The attack
# ----------------------------------------------------------------------------------------------
class RegressionExtraction:
    """Extraction by supervised regression of the victim's graph embeddings (the paper's method).

    Args:
        arch: Surrogate architecture (see :data:`ENCODER_ARCHS`).
        hidden: Surrogate width.
        epochs: Full-batch training epochs.
        lr: Adam learning rate.
        seed: Initialisation seed.
        residual: Residual surrogate starting at the text prior (our variant ``regression_residual``);
            the paper's surrogate is a plain encoder (``False``).
    """

    def __init__(self, arch: str = "sage", hidden: int = 256, epochs: int = 150, lr: float = 5e-3, seed: int = 0,
                 residual: bool = False) -> None:
        if epochs < 1 or lr <= 0:
            raise ValueError("epochs must be >= 1 and lr > 0")
        self.arch, self.hidden, self.epochs, self.lr, self.seed = arch, hidden, epochs, lr, seed
        self.residual = residual

    def _init(self, dim: int, out_dim: int | None = None) -> GraphEncoder:
        torch.manual_seed(self.seed)
        return GraphEncoder(self.arch, dim, self.hidden, out_dim or dim, residual=self.residual)

    def _out_dim(self, x: torch.Tensor, targets: torch.Tensor) -> int:
        """Width of the surrogate's output: that of the returned embeddings."""
        return int(targets.shape[1])

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Normalised MSE (directions only)."""
        return normalized_mse(pred, target)

    def fit(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor, targets: torch.Tensor,
            **_: object) -> RegressionExtraction:
        """Train the surrogate on the queried ``nodes`` and the returned ``targets``; sets ``surrogate_``, ``train_time_s_``."""
        model = self._init(x.shape[1], self._out_dim(x, targets))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        t0 = time.perf_counter()
        model.train()
        for _ in range(self.epochs):
            loss = self.loss(model(x, edge_index)[nodes], targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.train_time_s_ = time.perf_counter() - t0
        self.surrogate_ = model.eval()
        return self

    @torch.no_grad()
    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Surrogate embeddings of every node."""
        return F.normalize(self.surrogate_(x, edge_index), dim=-1)
