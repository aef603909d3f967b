"""Configuration of the GFM extraction experiment."""

from __future__ import annotations

from dataclasses import dataclass, field

from trustlab.config import SystemConfig
from trustlab.errors import UserError

ARCHS = ("sage", "gcn", "gat", "meanmlp", "mlp")


@dataclass
class GraphSpec:
    """A WordNet graph: a name and its lexicographer classes."""

    name: str = ""
    classes: list[str] = field(default_factory=list)


def _g(name: str, classes: list[str]) -> GraphSpec:
    return GraphSpec(name, classes)


@dataclass
class Config(SystemConfig):
    """GFM extraction settings.

    Attributes:
        per_class: Nodes per class in each sampled WordNet graph.
        source_graphs: Graphs the victim is pretrained on (CLIP-style, graph vs summary text).
        target_graphs: Unseen graphs (zero-shot evaluation); names used by the scenarios below.
        victim_arch / victim_hidden / victim_epochs / victim_lr: the victim graph encoder.
        victim_residual: Residual victim readout (starts at the text prior) or a plain readout.
        victim_propagate: Residual on the propagated text ``x + mean of neighbours`` instead of ``x``.
        victim_learn_text_proj: Train the victim's text projection (else identity on the frozen encoder).
        attacker_arch / attacker_hidden / attacker_epochs / attacker_lr: the surrogate.
        attacker_residual: Residual surrogate for the paper's ``regression`` row (the paper: a plain encoder;
            ``regression_residual`` is always run as our variant where reported).
        query_frac: Default query budget, as a fraction of the target graph's nodes.
        test_frac: Fraction of each target graph's nodes held out for zero-shot evaluation.
        budgets: Query-budget sweep (fractions of target nodes).
        access: Partial node access sweep (fraction of target nodes the attacker sees).
        mismatch_archs: Surrogate architectures for the architecture-mismatch scenario (``mlp`` sees no
            neighbours at all; ``gat`` is attention; ``meanmlp`` averages neighbours without learned messages).
        noise_sigmas / round_decimals / rate_limits: defenses applied by the victim service.
        scenarios: Which scenarios to run.
        data_seed: Seed of the WordNet graph sampling (fixed across run seeds, so node texts are encoded once;
            run seeds vary splits, queries, victim and surrogate initialisation).
        text_model: Sentence encoder folder (None: the packaged all-MiniLM-L6-v2).
        max_text_tokens: Token limit for node texts.
    """

    per_class: int = 80
    source_graphs: list[GraphSpec] = field(default_factory=lambda: [
        _g("src_abstract", ["noun.act", "noun.communication", "noun.cognition", "noun.state", "noun.attribute"]),
        _g("src_social", ["noun.group", "noun.location", "noun.time", "noun.quantity", "noun.possession"]),
        _g("src_verbs", ["verb.change", "verb.stative", "verb.social", "verb.possession", "verb.creation"]),
        _g("src_mind", ["verb.cognition", "verb.communication", "verb.competition", "verb.emotion", "verb.perception"]),
    ])
    target_graphs: list[GraphSpec] = field(default_factory=lambda: [
        _g("living", ["noun.animal", "noun.plant", "noun.person", "noun.body", "noun.food"]),
        _g("things", ["noun.artifact", "noun.object", "noun.substance", "noun.shape"]),
        _g("happenings", ["noun.feeling", "noun.event", "noun.process", "noun.phenomenon", "noun.relation"]),
        _g("actions", ["verb.motion", "verb.contact", "verb.consumption", "verb.body", "verb.weather"]),
    ])
    victim_arch: str = "sage"
    victim_hidden: int = 256
    victim_epochs: int = 80
    victim_lr: float = 5e-4
    victim_residual: bool = True
    victim_propagate: bool = True
    victim_learn_text_proj: bool = False
    attacker_arch: str = "sage"
    attacker_hidden: int = 256
    attacker_epochs: int = 60
    attacker_lr: float = 5e-3
    attacker_residual: bool = False
    query_frac: float = 0.1
    test_frac: float = 0.5
    budgets: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.25, 0.5])
    access: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    mismatch_archs: list[str] = field(default_factory=lambda: ["gcn", "gat", "mlp"])
    noise_sigmas: list[float] = field(default_factory=lambda: [0.02, 0.05])
    round_decimals: list[int] = field(default_factory=lambda: [1])
    rate_limits: list[int] = field(default_factory=lambda: [10])
    scenarios: list[str] = field(default_factory=lambda: [
        "graph_specific", "domain_level", "arch_mismatch", "query_budget", "partial_access", "data_discrepancy",
        "defenses",
    ])
    data_seed: int = 0
    text_model: str | None = None
    max_text_tokens: int = 64

    SCALES = {
        "smoke": {
            "per_class": 16,
            "seeds": [0],
            "victim_epochs": 40,
            "attacker_epochs": 25,
            "victim_hidden": 128,
            "attacker_hidden": 128,
            "query_frac": 0.25,
            "budgets": [0.05, 0.25],
            "access": [0.5, 1.0],
            "mismatch_archs": ["mlp"],
            "noise_sigmas": [0.05],
            "round_decimals": [1],
            "rate_limits": [5],
            "max_text_tokens": 32,
        },
        "quick": {
            "per_class": 12,
            "seeds": [0],
            "source_graphs": [{"name": "src_abstract", "classes": ["noun.act", "noun.communication", "noun.cognition",
                                                                   "noun.state", "noun.attribute"]}],
            "target_graphs": [{"name": "living", "classes": ["noun.animal", "noun.plant", "noun.person", "noun.body",
                                                             "noun.food"]},
                              {"name": "actions", "classes": ["verb.motion", "verb.contact", "verb.consumption",
                                                              "verb.body", "verb.weather"]}],
            "victim_epochs": 40,
            "attacker_epochs": 25,
            "victim_hidden": 64,
            "attacker_hidden": 64,
            "query_frac": 0.25,
            "budgets": [0.05, 0.1, 0.25, 0.5],
            "access": [0.5, 1.0],
            "mismatch_archs": ["mlp", "gat"],
            "noise_sigmas": [0.05],
            "round_decimals": [1],
            "rate_limits": [5],
            "max_text_tokens": 32,
        },
        "paper": {"per_class": 200, "seeds": [0, 1, 2, 3, 4]},
    }

    def validate(self) -> None:
        super().validate()
        for a in [self.victim_arch, self.attacker_arch, *self.mismatch_archs]:
            if a not in ARCHS:
                raise UserError(f"unknown graph architecture {a!r}", f"use one of {', '.join(ARCHS)}")
        for f in [self.query_frac, *self.budgets]:
            if not 0 < f <= 1 - self.test_frac + 1e-9:
                raise UserError(f"query budget {f} must be in (0, 1 - test_frac = {1 - self.test_frac:g}]",
                                "lower the budget or test_frac")
        if not 0 < self.test_frac < 1:
            raise UserError(f"test_frac={self.test_frac} must be in (0, 1)", "use e.g. 0.5")
        if self.victim_propagate and not self.victim_residual:
            raise UserError("victim_propagate needs victim_residual=true", "set both, or neither")
        if any(not 0 < p <= 1 for p in self.access):
            raise UserError(f"access fractions {self.access} must be in (0, 1]", "use e.g. [0.25, 0.5, 1.0]")
        if self.per_class < 4:
            raise UserError(f"per_class={self.per_class} is too small", "use at least 4")
        if len(self.target_graphs) < 2 or not self.source_graphs:
            raise UserError("need >= 1 source graph and >= 2 target graphs", "fix source_graphs/target_graphs")
        if self.victim_arch in ("mlp", "meanmlp"):
            raise UserError(f"victim_arch {self.victim_arch!r} is not a message-passing encoder", "use sage, gcn or gat")
        known = {"graph_specific", "domain_level", "arch_mismatch", "query_budget", "partial_access",
                 "data_discrepancy", "defenses"}
        bad = set(self.scenarios) - known
        if bad:
            raise UserError(f"unknown scenarios {sorted(bad)}", f"use some of {', '.join(sorted(known))}")
