"""Model extraction attacks on graph foundation models (MEA-GFM, arXiv:2511.11912)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="gfm-extraction",
    title="Model extraction attacks on graph foundation models (embedding regression)",
    paper="Xu et al., A Systematic Study of Model Extraction Attacks on Graph Foundation Models (arXiv:2511.11912)",
    config="trustlab.systems.gfm_extraction.config:Config",
    run="trustlab.systems.gfm_extraction.experiment:run",
    headline=[("victim", "zs_acc"), ("regression", "zs_acc"), ("regression", "cost_ratio")],
    status="reproduced (WordNet TAGs, tiny GraphCLIP-style victim)",
)
