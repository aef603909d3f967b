"""FVL-FP: fair federated prompt tuning of CLIP-like models (CDFP + DSOP + FPF).

Reconstruction of Chen et al., "Mitigating Group-Level Fairness Disparities in Federated Visual
Language Models" (arXiv:2505.01851). Only the abstract is public; every component below is the most
standard published form of what the abstract names (see README.md, "Design choices"):

* **Prompt tuning base (CoOp / PromptFL)**: frozen dual encoder, a learnable unified context
  ``V = [v_1..v_M]`` replacing the embeddings of ``"x x x x"`` in ``"x x x x {class} person"``;
  ``p(y=c|x) = softmax_c(s * cos(f(x), g(t_c)))``. Only prompt tensors are exchanged.
* **CDFP (cross-layer demographic fair prompting)**: deep prompts at every text layer (VPT-deep /
  MaPLe) trained with a counterfactual regulariser: (i) an image-side counterfactual that swaps the
  attribute in embedding space, ``z_cf = z + mean_y (mu_{y,a'} - mu_{y,a})`` (client-local, within-class means), with
  ``KL(p(.|z_cf) || p(.|z))``; (ii) a cross-layer text-side term, ``sum_l ||h_l(a, c) - h_l(a', c)||^2``
  between the EOT hidden states of ``"x.. {group} {class} person"`` prompts whose group word is swapped.
* **DSOP (demographic subspace orthogonal projection)**: embed ``"x.. {group} person"`` with the current
  (fair) prompt, span the centred group subspace ``U`` (rank ``G - 1``), and project image features
  with ``P = I - U U^T`` (Chuang et al., 2023, ``get_proj_matrix``) before classification.
* **FPF (fair-aware prompt fusion)**: server weights ``w_k ∝ n_k exp(eta (Acc_k - gamma Gap_k))`` from
  each client's local-validation accuracy and equalized-odds gap of its updated prompt (only two
  scalars leave the client; group labels stay local).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.federated import FitReply, NDArrays, UpdateStrategy, aggregate
from trustlab.metrics.fairness import eo_diff, fairness_report
from trustlab.models.tiny_clip import VLBackbone

__all__ = [
    "FLAGS",
    "FPFStrategy",
    "LocalTrainConfig",
    "MethodFlags",
    "PromptClient",
    "PromptLearner",
    "cdfp_image_loss",
    "classify",
    "evaluate_global",
    "cdfp_layer_loss",
    "counterfactual_swap",
    "counts_from_metrics",
    "counts_to_metrics",
    "fpf_weights",
    "group_projection",
    "group_shifts",
]


@dataclass(frozen=True)
class MethodFlags:
    """Which FVL-FP components a run uses (the ablation switches) and its local objective.

    Attributes:
        cdfp: Deep cross-layer prompts + counterfactual regularisation.
        dsop: Orthogonal projection of image features off the text-derived group subspace.
        fpf: Fair-aware fusion weights on the server.
    """

    cdfp: bool = False
    dsop: bool = False
    fpf: bool = False


#: Method name -> components (baselines use plain prompt tuning locally).
FLAGS: dict[str, MethodFlags] = {
    "promptfl": MethodFlags(),
    "fairfed": MethodFlags(),
    "qffl": MethodFlags(),
    "fvlfp": MethodFlags(True, True, True),
    "fvlfp_no_cdfp": MethodFlags(False, True, True),
    "fvlfp_no_dsop": MethodFlags(True, False, True),
    "fvlfp_no_fpf": MethodFlags(True, True, False),
}


# ------------------------------------------------------------------------------------------------
# Pure maths
# ------------------------------------------------------------------------------------------------
def group_projection(group_text: torch.Tensor, rank: int | None = None) -> torch.Tensor:
    """``P = I - U U^T`` removing the centred span of the group text embeddings (DSOP).

    Args:
        group_text: ``(G, E)`` (normalised) text embeddings of the group prompts.
        rank: Directions removed (default ``G - 1``, the full centred span).

    Returns:
        ``(E, E)`` symmetric idempotent projection matrix.
    """
    g, e = group_text.shape
    if g < 2:
        raise ValueError("DSOP needs at least two group prompts")
    r = g - 1 if rank is None else rank
    if not 1 <= r <= min(g - 1, e):
        raise ValueError(f"rank must be in [1, {min(g - 1, e)}], got {r}")
    centred = group_text - group_text.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    u = vh[:r].t()
    return torch.eye(e, dtype=group_text.dtype, device=group_text.device) - u @ u.t()


def group_shifts(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, n_classes: int, n_groups: int) -> torch.Tensor:
    """Within-class attribute shifts ``S[a, a'] = mean_y (mu_{y,a'} - mu_{y,a})`` (``(G, G, E)``).

    Averaging the group-mean difference *within* each class keeps the task signal out of the
    counterfactual: on a skewed client, plain group means ``mu_a' - mu_a`` would also swap most of the
    class direction (the attribute predicts the label there). Classes lacking either cell are skipped;
    when no class has both, the plain group-mean difference is used.
    """
    e = z.shape[1]
    out = torch.zeros(n_groups, n_groups, e, dtype=z.dtype)
    for a in range(n_groups):
        for b in range(n_groups):
            if a == b:
                continue
            diffs = [z[(labels == c) & (groups == b)].mean(0) - z[(labels == c) & (groups == a)].mean(0)
                     for c in range(n_classes) if bool(((labels == c) & (groups == a)).any())
                     and bool(((labels == c) & (groups == b)).any())]
            if diffs:
                out[a, b] = torch.stack(diffs).mean(0)
            elif bool((groups == a).any()) and bool((groups == b).any()):
                out[a, b] = z[groups == b].mean(0) - z[groups == a].mean(0)
    return out


def counterfactual_swap(z: torch.Tensor, groups: torch.Tensor, shifts: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Swap the demographic attribute in embedding space: ``z_cf = z + S[a, a']`` for a random ``a' != a``.

    Args:
        z: ``(B, E)`` image features.
        groups: ``(B,)`` group of each sample.
        shifts: ``(G, G, E)`` from :func:`group_shifts`.
        generator: Picks ``a'`` when ``G > 2``.
    """
    n_groups = shifts.shape[0]
    step = torch.randint(1, n_groups, groups.shape, generator=generator) if n_groups > 2 else torch.ones_like(groups)
    other = (groups + step.to(groups.device)) % n_groups
    return z + shifts[groups, other]


def cdfp_image_loss(logits: torch.Tensor, logits_cf: torch.Tensor) -> torch.Tensor:
    """``KL(p(.|z_cf) || p(.|z))`` averaged over the batch."""
    return F.kl_div(logits.log_softmax(-1), logits_cf.log_softmax(-1), log_target=True, reduction="batchmean")


def cdfp_layer_loss(hidden: Sequence[torch.Tensor], n_groups: int) -> torch.Tensor:
    """Cross-layer counterfactual term: mean over layers of ``||LN(h_l(a, c)) - mean_a' LN(h_l(a', c))||^2 / W``.

    Hidden states are layer-normalised (no affine) so every layer contributes on the same scale.

    Args:
        hidden: Per-layer ``(G * C, W)`` EOT states of the prompts ``"x.. {group a} {class c} person"``
            ordered group-major (all classes of group 0, then group 1, ...).
        n_groups: ``G``.
    """
    total = hidden[0].new_zeros(())
    for h in hidden:
        hg = F.layer_norm(h, h.shape[-1:]).reshape(n_groups, -1, h.shape[-1])
        total = total + ((hg - hg.mean(0, keepdim=True)) ** 2).mean()
    return total / len(hidden)


def counts_to_metrics(counts: np.ndarray, prefix: str = "counts_before") -> dict[str, float]:
    """Flatten ``counts[group, true, pred]`` into scalar metrics ``"{prefix}:g:y:p"`` (Flower metrics are scalars)."""
    return {f"{prefix}:{g}:{y}:{p}": float(counts[g, y, p]) for g, y, p in np.ndindex(*counts.shape)}


def counts_from_metrics(metrics: dict[str, Any], prefix: str = "counts_before") -> np.ndarray:
    """Inverse of :func:`counts_to_metrics`.

    Example:
        >>> c = np.arange(8.0).reshape(2, 2, 2)
        >>> bool((counts_from_metrics(counts_to_metrics(c)) == c).all())
        True
    """
    cells = {tuple(int(i) for i in k.split(":")[1:]): float(v) for k, v in metrics.items() if k.startswith(prefix + ":")}
    if not cells:
        raise KeyError(f"no {prefix} counts in the client metrics")
    shape = tuple(max(ix[d] for ix in cells) + 1 for d in range(3))
    out = np.zeros(shape)
    for ix, v in cells.items():
        out[ix] = v
    return out


def fpf_weights(num_examples: np.ndarray, acc: np.ndarray, gap: np.ndarray, eta: float, gamma: float) -> np.ndarray:
    """Fair-aware fusion weights ``w_k ∝ n_k exp(eta (Acc_k - gamma Gap_k))`` (sum to 1).

    Example:
        >>> fpf_weights(np.array([1., 1.]), np.array([.8, .8]), np.array([.4, 0.]), 10, 1).round(3).tolist()
        [0.018, 0.982]
    """
    n, a, d = (np.asarray(v, dtype=np.float64) for v in (num_examples, acc, gap))
    if not (n.shape == a.shape == d.shape) or n.ndim != 1:
        raise ValueError("num_examples, acc and gap must be 1-D of equal length")
    score = eta * (a - gamma * d)
    w = n * np.exp(score - score.max())
    return w / w.sum()


# ------------------------------------------------------------------------------------------------
# Prompt learner
# ------------------------------------------------------------------------------------------------
class PromptLearner(nn.Module):
    """CoOp unified context (+ optional deep prompts) over a frozen :class:`VLBackbone`.

    The backbone is *not* a sub-module, so ``state_dict()`` holds only the exchanged prompt tensors.

    Args:
        backbone: The frozen dual encoder.
        class_names: Task class words.
        group_names: Demographic group words.
        n_ctx: Number of context vectors ``M``.
        deep: Add deep prompts at text layers ``1..L-1`` (CDFP's cross-layer prompts).
        init_std: Std of the context initialisation.
        generator: Seeds the initialisation.
    """

    def __init__(self, backbone: VLBackbone, class_names: Sequence[str], group_names: Sequence[str], n_ctx: int = 4,
                 deep: bool = False, init_std: float = 0.02, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.n_ctx, self.deep = n_ctx, deep
        self.n_classes, self.n_groups = len(class_names), len(group_names)
        w = backbone.text_width
        self.ctx = nn.Parameter(torch.randn(n_ctx, w, generator=generator) * init_std)
        if deep:
            self.deep_ctx = nn.Parameter(torch.randn(max(backbone.n_text_layers - 1, 1), n_ctx, w, generator=generator) * init_std)
        ph = " ".join(["x"] * n_ctx)
        texts = {
            "class": [f"{ph} {c} person" for c in class_names],
            "group": [f"{ph} {g} person" for g in group_names],
            "cf": [f"{ph} {g} {c} person" for g in group_names for c in class_names],
        }
        self._slices: dict[str, slice] = {}
        flat: list[str] = []
        for k, v in texts.items():
            self._slices[k] = slice(len(flat), len(flat) + len(v))
            flat += v
        self._ids = backbone.tokenize(flat)  # one padded batch: a single text forward serves all kinds
        with torch.no_grad():
            self._emb = backbone.token_embed(self._ids).detach()

    def deep_list(self, n_layers: int) -> list[torch.Tensor | None] | None:
        """Per-layer deep prompts (``None`` at layer 0 and when not deep)."""
        if not self.deep:
            return None
        return [None] + [self.deep_ctx[i] for i in range(n_layers - 1)]

    def all_features(self, backbone: VLBackbone, kinds: Sequence[str] = ("class",),
                     return_hidden: bool = False, shallow: bool = False) -> dict[str, Any]:
        """Normalised text features of the ``class``/``group``/``cf`` prompts in one forward pass.

        ``shallow=True`` leaves out the deep prompts (input-level context only).

        Returns:
            ``{kind: (n, E)}`` and, when ``return_hidden``, ``"cf_hidden"``: per-layer EOT states of ``cf``.
        """
        sel = [self._slices[k] for k in kinds]
        rows = torch.cat([torch.arange(s.start, s.stop) for s in sel])
        ids, emb = self._ids[rows], self._emb[rows]
        ctx = self.ctx.unsqueeze(0).expand(emb.shape[0], -1, -1)
        x = torch.cat([emb[:, :1], ctx, emb[:, 1 + self.n_ctx:]], dim=1)
        deep = None if shallow else self.deep_list(backbone.n_text_layers)
        out = backbone.encode_text_embeds(x, ids, deep, self.n_ctx, return_hidden)
        feats, hidden = (out[0], out[1]) if return_hidden else (out, None)
        feats = F.normalize(feats, dim=-1)
        res: dict[str, Any] = {}
        i = 0
        for k, s in zip(kinds, sel, strict=True):
            n = s.stop - s.start
            res[k] = feats[i: i + n]
            if k == "cf" and hidden is not None:
                res["cf_hidden"] = [h[i: i + n] for h in hidden]
            i += n
        return res

    def text_features(self, backbone: VLBackbone, kind: str = "class") -> torch.Tensor:
        """Normalised features of one prompt kind."""
        return self.all_features(backbone, (kind,))[kind]

    def group_features(self, backbone: VLBackbone) -> torch.Tensor:
        """Features of the group prompts that span DSOP's subspace (shallow context only, detached).

        The deep prompts are trained by CDFP to make the text tower *insensitive* to group words, which
        would collapse the group subspace; DSOP therefore reads the group directions at the
        input-level fair context.
        """
        return self.all_features(backbone, ("group",), shallow=True)["group"].detach()

    def get_arrays(self) -> NDArrays:
        """Prompt tensors as NumPy arrays (what a client sends)."""
        return [v.detach().cpu().numpy().copy() for v in self.state_dict().values()]

    def set_arrays(self, arrays: NDArrays) -> None:
        """Load prompt tensors from NumPy arrays."""
        keys = list(self.state_dict().keys())
        if len(keys) != len(arrays):
            raise ValueError(f"prompt learner has {len(keys)} tensors, got {len(arrays)}")
        self.load_state_dict({k: torch.as_tensor(np.asarray(a), dtype=torch.float32) for k, a in zip(keys, arrays, strict=True)})


def classify(backbone: VLBackbone, learner: PromptLearner, z: torch.Tensor, dsop: bool) -> torch.Tensor:
    """Logits ``s * <proj(z), t_c>`` for normalised image features ``z``."""
    t = learner.text_features(backbone, "class")
    if dsop:
        z = F.normalize(z @ group_projection(learner.group_features(backbone)), dim=-1)
    return backbone.logit_scale * z @ t.t()


# ------------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalTrainConfig:
    """Local optimisation of the prompts.

    Attributes:
        local_steps: SGD steps per round.
        batch_size: Minibatch size.
        lr: SGD learning rate.
        momentum: SGD momentum (reset every round, as PromptFL re-creates the optimiser).
        lambda_cf: Weight of CDFP's image counterfactual KL term.
        lambda_layer: Weight of CDFP's cross-layer text term.
    """

    local_steps: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    lambda_cf: float = 5.0
    lambda_layer: float = 1.0

    def __post_init__(self) -> None:
        if self.local_steps < 1 or self.batch_size < 1:
            raise ValueError("local_steps and batch_size must be >= 1")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("lr must be > 0 and momentum in [0, 1)")
        if self.lambda_cf < 0 or self.lambda_layer < 0:
            raise ValueError("lambda_cf and lambda_layer must be >= 0")


class PromptClient:
    """A federated client holding precomputed (frozen-encoder) image features and its local labels.

    Group labels are used only locally (CDFP's group means, the local fairness gap) and never sent.

    Args:
        cid: Client id.
        backbone: Frozen dual encoder (shared, read-only).
        learner: A prompt learner of the right shape (its values are overwritten every round).
        feats: ``{"train"|"val": (z, y, a)}`` normalised image features, labels, groups.
        flags: Components in use.
        train_cfg: Local optimisation.
        seed: Seeds minibatch order and counterfactual draws (per round).
    """

    def __init__(self, cid: int, backbone: VLBackbone, learner: PromptLearner,
                 feats: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], flags: MethodFlags,
                 train_cfg: LocalTrainConfig, seed: int) -> None:
        self.cid = cid
        self.state: dict[str, Any] = {}
        self.backbone, self.learner, self.flags, self.cfg, self.seed = backbone, learner, flags, train_cfg, seed
        self.feats = feats
        z, y, a = feats["train"]
        self.shifts_ = group_shifts(z, y, a, learner.n_classes, learner.n_groups)

    @property
    def num_examples(self) -> int:
        """Local training set size ``n_k``."""
        return int(self.feats["train"][0].shape[0])

    def evaluate_split(self, split: str) -> dict[str, Any]:
        """Loss, accuracy, fairness gaps and (group, label, prediction) counts of the current prompts on a split.

        ``cf_gap`` is the mean total-variation distance between the class posteriors of each sample and
        of its attribute counterfactual (:func:`counterfactual_swap`); unlike the EO difference it uses
        every sample, so it stays informative on clients where one (label, group) cell is nearly empty.
        """
        z, y, a = self.feats[split]
        with torch.no_grad():
            logits = classify(self.backbone, self.learner, z, self.flags.dsop)
            loss = float(F.cross_entropy(logits, y))
            pred = logits.argmax(-1)
            other = (a + 1) % self.learner.n_groups
            z_cf = F.normalize(z + self.shifts_[a, other], dim=-1)
            p_cf = classify(self.backbone, self.learner, z_cf, self.flags.dsop).softmax(-1)
            cf_gap = float(0.5 * (logits.softmax(-1) - p_cf).abs().sum(-1).mean())
        yn, pn, an = y.numpy(), pred.numpy(), a.numpy()
        c, g = self.learner.n_classes, self.learner.n_groups
        counts = np.zeros((g, c, c))  # [group, true, pred]
        np.add.at(counts, (an, yn, pn), 1)
        return {"loss": loss, "acc": float(np.mean(yn == pn)), "eo_diff": eo_diff(yn, pn, an), "cf_gap": cf_gap,
                "counts": counts}

    def fit(self, parameters: NDArrays, config: dict[str, Any]) -> FitReply:
        """Evaluate the global prompt locally, train ``local_steps`` steps, report local metrics."""
        self.learner.set_arrays(parameters)
        metrics: dict[str, Any] = {}
        if config.get("report_before"):  # FairFed: the global prompt's local fairness statistics
            before = self.evaluate_split("val")
            metrics.update(acc_before=before["acc"], eo_before=before["eo_diff"], **counts_to_metrics(before["counts"]))
        if config.get("report_loss"):  # q-FFL: the global prompt's local training loss F_k
            metrics["train_loss_before"] = self.evaluate_split("train")["loss"]
        rnd = int(config.get("server_round", 0))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + rnd * 101 + int(self.cid))
        z, y, a = self.feats["train"]
        opt = torch.optim.SGD(self.learner.parameters(), lr=float(config.get("lr", self.cfg.lr)), momentum=self.cfg.momentum)
        n = z.shape[0]
        bb, lr_ = self.backbone, self.learner
        use_layer = self.flags.cdfp and self.cfg.lambda_layer > 0
        for _ in range(self.cfg.local_steps):
            idx = torch.randperm(n, generator=gen)[: self.cfg.batch_size]
            zb, yb, ab = z[idx], y[idx], a[idx]
            f = lr_.all_features(bb, ("class", "cf") if use_layer else ("class",), return_hidden=use_layer)
            t = f["class"]
            proj = group_projection(lr_.group_features(bb)) if self.flags.dsop else None
            zp = F.normalize(zb @ proj, dim=-1) if proj is not None else zb
            logits = bb.logit_scale * zp @ t.t()
            loss = F.cross_entropy(logits, yb)
            if self.flags.cdfp and self.cfg.lambda_cf > 0:
                zcf = F.normalize(counterfactual_swap(zb, ab, self.shifts_, gen), dim=-1)
                zcf = F.normalize(zcf @ proj, dim=-1) if proj is not None else zcf
                loss = loss + self.cfg.lambda_cf * cdfp_image_loss(logits, bb.logit_scale * zcf @ t.t())
            if use_layer:
                loss = loss + self.cfg.lambda_layer * cdfp_layer_loss(f["cf_hidden"], lr_.n_groups)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if config.get("report_after"):  # FPF: the updated prompt's local accuracy and fairness gap
            after = self.evaluate_split("val")
            metrics.update(acc=after["acc"], eo_diff=after["eo_diff"], cf_gap=after["cf_gap"])
        return FitReply(self.cid, lr_.get_arrays(), self.num_examples, metrics)


# ------------------------------------------------------------------------------------------------
# Server: fair-aware prompt fusion
# ------------------------------------------------------------------------------------------------
class FPFStrategy(UpdateStrategy):
    """Fair-aware prompt fusion: prompt updates averaged with :func:`fpf_weights`.

    Args:
        eta: Softmax temperature of the score ``Acc_k - gamma Gap_k``.
        gamma: Weight of the fairness gap against accuracy.
        gap: Which local fairness gap the clients report: ``"cf_gap"`` (counterfactual posterior shift,
            default) or ``"eo_diff"`` (equalized-odds difference on the local validation split).
    """

    def __init__(self, eta: float = 10.0, gamma: float = 2.0, gap: str = "cf_gap") -> None:
        super().__init__()
        if eta < 0 or gamma < 0:
            raise ValueError(f"eta and gamma must be >= 0, got {eta}, {gamma}")
        if gap not in ("cf_gap", "eo_diff"):
            raise ValueError(f"gap must be 'cf_gap' or 'eo_diff', got {gap!r}")
        self.eta, self.gamma, self.gap = eta, gamma, gap
        self._replies: dict[Any, dict[str, Any]] = {}

    def configure_train(self, server_round, parameters, client_ids):  # noqa: D102
        return {cid: {"server_round": server_round, "report_after": True} for cid in client_ids}

    def aggregate_train(self, server_round: int, parameters: NDArrays, replies: Sequence[FitReply]) -> tuple[NDArrays, dict[str, Any]]:
        """Remember the reported (acc, gap) per client, then aggregate."""
        self._replies = {r.client_id: r.metrics for r in replies}
        return super().aggregate_train(server_round, parameters, replies)

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        acc = np.array([self._replies[c]["acc"] for c in client_ids])
        gap = np.array([self._replies[c][self.gap] for c in client_ids])
        w = fpf_weights(num_examples, acc, gap, self.eta, self.gamma)
        return aggregate.Aggregate(update=w @ updates, weights=w, accepted=np.ones(len(client_ids), dtype=bool))


def evaluate_global(backbone: VLBackbone, learner: PromptLearner, z: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                    dsop: bool) -> dict[str, float]:
    """Accuracy, DP/EO difference and worst-(label, group) accuracy of the prompts on features ``z``."""
    with torch.no_grad():
        pred = classify(backbone, learner, z, dsop).argmax(-1)
    return fairness_report(y.numpy(), pred.numpy(), a.numpy(), n_classes=learner.n_classes)
