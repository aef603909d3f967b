"""ICFNet: integrated cross-modal fusion network for multimodal survival prediction."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="icfnet",
    title="ICFNet: cross-modal fusion (OT co-attention, residual orthogonal decomposition, balanced NLL) for survival",
    paper="Zhang et al., ICFNet: Integrated Cross-modal Fusion Network for Survival Prediction, "
          "Information Fusion 2025 (arXiv:2501.02778)",
    config="trustlab.systems.icfnet.config:Config",
    run="trustlab.systems.icfnet.experiment:run",
    headline=[("icfnet", "c_index", "synthetic"), ("late_fusion", "c_index", "synthetic"), ("icfnet", "c_index", "breast_cancer"), ("coxph", "c_index", "breast_cancer")],
    status="reproduced at CPU scale (synthetic + breast_cancer); the official architecture's training "
           "settings are not yet re-searched",
    demo=("survival fit --clinical embedded --genomics embedded --time time --event event --folds 3 --out {out}",),
    key_figure="cindex_per_cohort.png",
)
