"""Data of the ICFNet experiment: the embedded datasets and users' files.

Everything lives in :mod:`trustlab.data.survival` (shared); this module re-exports it and builds the
experiment's cohorts.
"""

from __future__ import annotations

from trustlab.data.survival import (
    EMBEDDED,
    Modality,
    SurvivalDataset,
    load_patch_bags,
    load_survival_csv,
    load_survival_dataset,
    make_synthetic_multimodal,
)

__all__ = [
    "EMBEDDED",
    "Modality",
    "SurvivalDataset",
    "experiment_dataset",
    "load_patch_bags",
    "load_survival_csv",
    "load_survival_dataset",
    "make_synthetic_multimodal",
]


def experiment_dataset(name: str, n_synthetic: int = 300, censoring: float = 0.4) -> SurvivalDataset:
    """The cohort of setting ``name`` (the synthetic one is drawn with a fixed seed, 0, for every run seed)."""
    if name == "synthetic":
        return make_synthetic_multimodal(n=n_synthetic, seed=0, censoring=censoring, patches=(16, 32), patch_dim=8)
    return load_survival_dataset(name)
