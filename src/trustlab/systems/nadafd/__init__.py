"""NADAFD: noise-aware, dynamically adaptive federated backdoor defense for SAR target recognition."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="nadafd",
    title="Noise-aware, dynamically adaptive federated backdoor defense for SAR target recognition",
    paper="Hou et al., NADAFD, arXiv:2601.00900 (2026)",
    config="trustlab.systems.nadafd.config:Config",
    run="trustlab.systems.nadafd.experiment:run",
    headline=[("nadafd", "asr", "speckle"), ("median", "asr", "speckle"), ("fedavg", "asr", "speckle"), ("nadafd", "clean_acc", "speckle"), ("fedavg", "clean_acc", "no_attack")],
    status="reproduced (qualitative; paper tables not public)",
    demo=("fed nadafd --engine flower-inline --num-clients 6 --rounds 2 --method median --attack badnets "
          "--set n_test=200 --out {out}",),
    key_figure="asr_clean_vs_round.png",
)
