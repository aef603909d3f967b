"""Model extraction attacks on graph foundation models (MEA-GFM, arXiv:2511.11912)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="gfm-extraction",
    title="Model extraction attacks on graph foundation models (embedding regression)",
    paper="Xu et al., A Systematic Study of Model Extraction Attacks on Graph Foundation Models (arXiv:2511.11912)",
    config="trustlab.systems.gfm_extraction.config:Config",
    run="trustlab.systems.gfm_extraction.experiment:run",
    headline=[("victim", "margin_over_text", "graph_specific"), ("regression", "fid_gain", "graph_specific"),
              ("regression", "cos_gain", "graph_specific")],
    status="reconstructed from the abstract (WordNet TAGs, tiny GraphCLIP-style victim, CPU scale)",
    demo=("extract --victim embedded --graph embedded --budget 0.3 --eval 0.3 --out {out}",),
    key_figure="fidelity_gain_vs_budget.png",
)
