"""NADAFD experiment configuration (default scale: 10 clients, Dir(0.5), 30 % speckle attackers, 3 seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError

BASELINES = ("fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan", "flame", "fltrust", "foolsgold")
MODULES = ("fdci", "naat", "dha")
ATTACKS = ("speckle", "badnets", "dba")
#: ``nadafd`` is FDCI + NAAT + DHA as the abstract describes them; ``nadafd_collusion`` adds our
#: collusion term to DHA's quality (not in the abstract; a separate, named row).
ALL_METHODS = (*BASELINES, "nadafd", "nadafd_collusion", *(f"nadafd_no_{m}" for m in MODULES))
DEFAULT_METHODS = tuple(m for m in ALL_METHODS if m not in ("multikrum", "bulyan"))


@dataclass
class Config(SystemConfig):
    """All knobs of the NADAFD experiment.

    Attributes:
        data_dir: Folder of real MSTAR/OpenSARShip chips (see ``trustlab.data.sar.load_sar_folder``);
            empty: the embedded SAR simulator.
        num_classes: Simulator classes (>= 8).
        image_size: Chip side in pixels (multiple of 4).
        n_train: Training chips shared among clients.
        n_test: Test chips.
        n_root: Clean root set held by the server (FLTrust only).
        looks: Speckle looks ``L`` of the simulated chips.
        aspect_deg: Range of aspect angles of the simulated chips (one 60° sector by default).
        num_clients: Clients (all train every round unless ``fraction_fit < 1``).
        fraction_fit: Fraction of clients sampled per round.
        malicious_fraction: Fraction of malicious clients.
        malicious_fractions: Several attacker fractions in one run (the protocol): every attack runs at
            each, as setting ``<attack>_m<fraction>`` (e.g. ``speckle_m0.2``); empty: one setting per attack
            at ``malicious_fraction`` (``no_attack`` always uses ``malicious_fraction``'s split).
        distinct_triggers: Each attacker its own trigger: ``speckle`` its own Gamma texture, ``badnets``
            its own binary patch (same corner), drawn from a per-attacker seed; ASR is then the mean over
            the attackers' triggers (``asr_max``: the max). ``dba`` splits one global trigger into local
            parts, attacker ``k`` stamping part ``k mod 4`` whether or not this is set, and its ASR uses
            the assembled global trigger (as in the DBA paper). ``false``: all attackers share one trigger.
        alpha: Dirichlet concentration of the label skew.
        rounds: Federated rounds.
        local_epochs: Local epochs per round.
        batch_size: Local batch size.
        lr: Local SGD learning rate.
        momentum: Local SGD momentum (reset every round).
        lr_decay: Per-round decay of the local learning rate (stabilises the final non-IID model).
        width: First conv width of the CNN.
        attacks: Attack settings to run (``speckle``, ``badnets``, ``dba``).
        methods: Methods run under attack (``fedavg`` also runs under ``no_attack``).
        target_class: Backdoor target label.
        poison_fraction: Fraction of a malicious client's samples stamped and relabelled.
        scale_gamma: Model-replacement scale of malicious updates (1 = no scaling).
        trigger_size: Side of the trigger region (pixels).
        fdci_every: Run frequency-domain collaborative inversion every this many rounds.
        fdci_steps: Adam steps of the trigger inversion.
        fdci_probes: Pure-speckle probe images per inversion.
        fdci_cost: L1 mask cost of the inversion.
        naat_eps: L-inf budget of the PGD perturbation inside the mask.
        naat_steps: PGD steps.
        naat_beta: Weight of the adversarial loss.
        naat_fraction: Fraction of each batch turned adversarial.
        naat_looks: Speckle looks sampled for the mask-guided speckle.
        naat_offset: Largest amplitude ``a`` of the additive Gamma texture ``a·g`` inside random masks.
        dha_rho: Health EMA factor ``ρ``.
        dha_tau: Health threshold ``τ_h`` below which a client gets weight 0.
        dha_z0: Robust z-score tolerated before frequency suspicion lowers quality.
        dha_rule: Aggregation of the clipped updates: ``median`` (health-weighted coordinate-wise
            median) or ``mean`` (health-weighted mean).
        dha_behaviour: Per-round behaviour quality: ``consensus`` (cosine with the coordinate-wise
            median update) or ``cluster`` (FLAME's HDBSCAN majority-cluster membership).
        fdci_target: Which class FDCI scores: ``consensus`` (the class on which ``fdci_group`` clients
            are anomalous together, the suspected backdoor target) or ``max`` (each client's own most
            anomalous class; flags label-skewed benign clients).
        fdci_group: Number of clients that must be anomalous together on the suspected target class.
        fdci_score: FDCI's per-client statistic: ``transfer`` (susceptibility to the other clients'
            inverted triggers minus the reach of its own, see ``method.transfer_asymmetry``) or
            ``spectral`` (robust z of inverted mask size and high-frequency share across clients).
        dha_group: (``nadafd_collusion`` only) peers a client's deviation from the consensus must share to count as collusion.
        dha_z1: (``nadafd_collusion`` only) robust z of the collusion score tolerated before quality drops.
        clean_reference: Also run without attackers (setting ``no_attack``): FedAvg, and ``nadafd`` /
            ``nadafd_collusion`` when they are among the methods (the clean-accuracy cost of the defense).
    """

    data_dir: str = ""
    num_classes: int = 8
    image_size: int = 24
    n_train: int = 1000
    n_test: int = 600
    n_root: int = 100
    looks: float = 2.0
    aspect_deg: float = 60.0
    num_clients: int = 10
    fraction_fit: float = 1.0
    malicious_fraction: float = 0.3
    malicious_fractions: list[float] = field(default_factory=list)
    distinct_triggers: bool = False
    alpha: float = 0.5
    rounds: int = 12
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    lr_decay: float = 0.93
    width: int = 6
    attacks: list[str] = field(default_factory=lambda: ["speckle"])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    target_class: int = 0
    poison_fraction: float = 0.5
    scale_gamma: float = 1.0
    trigger_size: int = 6
    fdci_every: int = 3
    fdci_steps: int = 30
    fdci_probes: int = 4
    fdci_cost: float = 2.0
    naat_eps: float = 0.05
    naat_steps: int = 1
    naat_beta: float = 0.5
    naat_fraction: float = 0.25
    naat_looks: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    naat_offset: float = 0.3
    dha_rho: float = 0.7
    dha_tau: float = 0.4
    dha_z0: float = 3.0
    dha_rule: str = "median"
    dha_behaviour: str = "consensus"
    fdci_target: str = "max"
    fdci_group: int = 2
    fdci_score: str = "spectral"
    dha_group: int = 2
    dha_z1: float = 0.5
    clean_reference: bool = True

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"n_test": 300, "seeds": [0], "methods": ["fedavg", "nadafd"], "clean_reference": False},
        # demo scale (one seed, 5 clients, 6 rounds): shows the mechanism in seconds, is not evidence
        "quick": {"n_train": 500, "n_test": 300, "num_clients": 5, "rounds": 6, "lr_decay": 0.85, "seeds": [0],
                  "methods": ["fedavg", "median", "nadafd"], "clean_reference": False},
        "paper": {"n_train": 3000, "n_test": 1000, "image_size": 32, "rounds": 30, "num_classes": 10,
                  "seeds": [0, 1, 2, 3, 4], "attacks": ["speckle", "badnets", "dba"],
                  "methods": list(ALL_METHODS)},
    }

    def validate(self) -> None:
        """Check ranges and names; raise :class:`UserError` with the fix."""
        super().validate()
        bad_m = [m for m in self.methods if m not in ALL_METHODS]
        if bad_m:
            raise UserError(f"unknown method(s) {bad_m}", f"use any of: {', '.join(ALL_METHODS)}")
        bad_a = [a for a in self.attacks if a not in ATTACKS]
        if bad_a or not self.attacks:
            raise UserError(f"unknown or empty attacks {self.attacks}", f"use any of: {', '.join(ATTACKS)}")
        if self.num_classes < 2 or not 0 <= self.target_class < self.num_classes:
            raise UserError(f"target_class={self.target_class} not in [0, {self.num_classes})", "fix target_class")
        if self.num_clients < 3:
            raise UserError(f"num_clients={self.num_clients} is too small", "use at least 3 clients")
        for f in (self.malicious_fraction, *self.malicious_fractions):
            if not 0 <= f < 0.5:
                raise UserError(f"malicious fraction {f} (malicious_fraction / malicious_fractions)",
                                "use values in [0, 0.5)")
        if len({f"{f:g}" for f in self.malicious_fractions}) != len(self.malicious_fractions):
            raise UserError(f"malicious_fractions={self.malicious_fractions} repeats a value",
                            "list each fraction once")
        if self.image_size % 4 or self.image_size < 12:
            raise UserError(f"image_size={self.image_size}", "use a multiple of 4, >= 12")
        if self.trigger_size + 1 > self.image_size // 2:
            raise UserError(f"trigger_size={self.trigger_size} too large for {self.image_size}px chips",
                            "use trigger_size < image_size/2 - 1")
        for name in ("rounds", "local_epochs", "batch_size", "n_train", "n_test", "fdci_every", "fdci_steps",
                     "fdci_probes", "width", "n_root"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be >= 1", f"set {name} to a positive integer")
        if self.n_train < 10 * self.num_clients:
            raise UserError(f"n_train={self.n_train} too small for {self.num_clients} clients",
                            "give each client >= 10 chips")
        if not (0 < self.alpha and 0 < self.lr and 0 <= self.momentum < 1 and 0 < self.fraction_fit <= 1):
            raise UserError("alpha, lr must be > 0, momentum in [0, 1), fraction_fit in (0, 1]", "fix the value")
        if not (0 <= self.poison_fraction <= 1 and self.scale_gamma > 0 and 0 <= self.naat_fraction <= 1):
            raise UserError("poison_fraction, naat_fraction in [0, 1] and scale_gamma > 0 required", "fix the value")
        if not (0 <= self.dha_rho < 1 and 0 <= self.dha_tau <= 1 and self.naat_eps >= 0 and self.naat_steps >= 0):
            raise UserError("dha_rho in [0, 1), dha_tau in [0, 1], naat_eps/naat_steps >= 0 required", "fix the value")
        if self.dha_rule not in ("median", "mean", "trimmed") or self.dha_behaviour not in ("consensus", "cluster"):
            raise UserError(f"dha_rule={self.dha_rule!r}, dha_behaviour={self.dha_behaviour!r}",
                            "use dha_rule 'median', 'trimmed' or 'mean' and dha_behaviour 'consensus' or 'cluster'")
        if self.fdci_target not in ("consensus", "max") or self.fdci_group < 1 or \
                self.fdci_score not in ("transfer", "spectral"):
            raise UserError(f"fdci_target={self.fdci_target!r}, fdci_group={self.fdci_group}, "
                            f"fdci_score={self.fdci_score!r}",
                            "use fdci_target 'consensus' or 'max', fdci_group >= 1, fdci_score 'transfer' or "
                            "'spectral'")
        if self.dha_group < 1 or self.dha_group >= self.num_clients:
            raise UserError(f"dha_group={self.dha_group}", f"use 1 <= dha_group < num_clients ({self.num_clients})")
        if self.naat_offset < 0:
            raise UserError(f"naat_offset={self.naat_offset} must be >= 0", "set naat_offset to e.g. 0.3")
        if not self.naat_looks or min(self.naat_looks) <= 0:
            raise UserError(f"naat_looks={self.naat_looks}", "give positive numbers of looks, e.g. [1, 2, 4]")
