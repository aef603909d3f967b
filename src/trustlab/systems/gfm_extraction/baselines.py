"""Baselines at equal query budget: prior GNN extraction attacks and reference floors.

- ``distill``: knowledge distillation from a prediction-only API (the victim's zero-shot class
  probabilities on the query graph's classes), KL loss — the classic output-logit extraction.
- ``contrastive``: contrastive surrogate training (InfoNCE between surrogate and victim embeddings of
  the queried nodes, in-batch negatives), in the spirit of Podhajski et al. (ECAI'24).
- ``text_only``: zero-shot from the node text alone (no graph): the floor a GFM must beat.
- ``random_init``: an untrained surrogate (chance-level reference).
- ``text_prior``: a "surrogate" that returns the node-text embedding unchanged (no training, no use of
  the queries): what an attack must beat to have extracted anything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trustlab.systems.gfm_extraction.method import (
    GraphEncoder,
    RegressionExtraction,
    clip_loss,
    zero_shot_proba,
)


class DistillExtraction(RegressionExtraction):
    """Surrogate trained to match the victim's zero-shot probabilities (KL), given the class prompts."""

    def fit(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor, targets: torch.Tensor,
            class_emb: torch.Tensor | None = None, **_: object) -> DistillExtraction:
        if class_emb is None:
            raise ValueError("distillation needs the class embeddings of the query graph")
        self._class_emb = class_emb
        return super().fit(x, edge_index, nodes, targets)

    def _out_dim(self, x: torch.Tensor, targets: torch.Tensor) -> int:
        return int(self._class_emb.shape[1])  # targets are class probabilities; embeddings live in the text space

    def loss(self, pred: torch.Tensor, target_proba: torch.Tensor) -> torch.Tensor:
        logp = torch.log(zero_shot_proba(pred, self._class_emb) + 1e-9)
        return F.kl_div(logp, target_proba, reduction="batchmean")


class ContrastiveExtraction(RegressionExtraction):
    """Surrogate trained with InfoNCE against the victim embeddings (matched node = positive)."""

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return clip_loss(pred, target, torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))


class RandomInit(RegressionExtraction):
    """No training: the surrogate's initial weights."""

    def fit(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor, targets: torch.Tensor,
            **_: object) -> RandomInit:
        torch.manual_seed(self.seed)
        # non-residual: a residual encoder at init is exactly the text-only model (reported separately)
        self.surrogate_ = GraphEncoder(self.arch, x.shape[1], self.hidden, x.shape[1], residual=False).eval()
        self.train_time_s_ = 0.0
        return self


class TextPrior(RegressionExtraction):
    """Returns the node features (the text prior) unchanged; ignores the queried embeddings."""

    def fit(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor, targets: torch.Tensor,
            **_: object) -> TextPrior:
        self.surrogate_ = None
        self.train_time_s_ = 0.0
        return self

    @torch.no_grad()
    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


ATTACKS = {
    "regression": RegressionExtraction,
    "distill": DistillExtraction,
    "contrastive": ContrastiveExtraction,
    "random_init": RandomInit,
    "text_prior": TextPrior,
}
