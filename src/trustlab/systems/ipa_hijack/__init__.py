"""IP-Adapter hijacking: image-space adversarial examples against IP-Adapter's image encoder, and defenses."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="ipa-hijack",
    title="IP-Adapter hijacking attack and the adversarially trained encoder defense",
    paper="Chen, Dong and Xie, Mind the Trojan Horse: Image Prompt Adapter Enabling Scalable and Deceptive "
          "Jailbreaking, CVPR 2025 (arXiv:2504.05838)",
    config="trustlab.systems.ipa_hijack.config:Config",
    run="trustlab.systems.ipa_hijack.experiment:run",
    headline=[("none", "success_rate", "eps=8/255"), ("jpeg", "success_rate", "eps=8/255"), ("adv_encoder", "success_rate", "eps=8/255"), ("none", "success_rate", "eps=16/255")],
    status="reproduced (tiny pipeline)",
    demo=("hijack --pipeline tiny --images photo:chelsea --target photo:coffee --steps 50 --gen-steps 5 --out {out}",),
    key_figure="success_vs_eps.png",
)
