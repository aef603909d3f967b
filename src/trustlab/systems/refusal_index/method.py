"""The paper's method: two-pass evaluation + Gaussian-copula Refusal Index, and the simulation suite.

Reference: Pan et al., "Can LLMs Refuse Questions They Do Not Know? Measuring Knowledge-Aware
Refusal in Factual Tasks", ICLR 2026 (arXiv:2510.01782).

* :class:`TwoPassRefusalIndex` turns two evaluation passes into RI (estimator maths in
  :mod:`trustlab.metrics.refusal`).
* :func:`evaluate_two_pass` runs the two passes against any :class:`~trustlab.llm.base.Backend`:
  pass 1 with a refusal-permitting prompt on every question, pass 2 with a "must answer" prompt on
  the refused ones only; every answer is stored in a JSONL as soon as it exists (resume).
* :class:`SimulatedLLM` is a model with known latent knowledge and refusal policy, so the true RI is
  known and the estimator can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from trustlab.data.factual_qa import QAItem
from trustlab.llm.base import Backend, ChatRequest, Completion, Message
from trustlab.llm.grading import grade_answer
from trustlab.llm.runner import run_requests
from trustlab.llm.store import ResponseStore
from trustlab.metrics.refusal import RIEstimate, refusal_index, spearman, two_pass_counts

# --------------------------------------------------------------------------------------------------
# Prompts: pass-1 prompts permit refusal with different tendencies; "forced" forbids it (pass 2).
# Few-shot demonstrations teach the answer format (and, for pass 1, what a refusal looks like);
# the demonstration questions are not in the embedded set.
# --------------------------------------------------------------------------------------------------
_KNOWN = [("What is the capital city of Italy?", "Rome"),
          ("What is the chemical symbol of Oxygen?", "O"),
          ("How many legs does a spider have?", "8")]
_UNKNOWN = [("Who was the mayor of the town of Tubbercurry in 1911?", "I don't know."),
            ("What is the atomic mass of the isotope Osmium-187 to six decimals?", "I don't know."),
            ("In what year was the fourth conductor of the Vienna Boys' Choir born?", "I don't know.")]


@dataclass(frozen=True)
class PromptTemplate:
    """A system prompt plus few-shot (question, answer) turns.

    Attributes:
        name: Identifier (recorded in results).
        system: System prompt.
        shots: Demonstration (user, assistant) turns placed before the question.
        permits_refusal: Whether the prompt allows "I don't know" (pass 1) or forbids it (pass 2).
    """

    name: str
    system: str
    shots: tuple[tuple[str, str], ...] = ()
    permits_refusal: bool = True

    def messages(self, question: str) -> tuple[Message, ...]:
        """The chat messages for ``question``."""
        msgs: list[Message] = [{"role": "system", "content": self.system}]
        for q, a in self.shots:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": question})
        return tuple(msgs)


PROMPTS: dict[str, PromptTemplate] = {
    "standard": PromptTemplate(
        "standard",
        "Answer with only the answer, in a few words. If you do not know the answer, reply: I don't know.",
        (_KNOWN[0], _UNKNOWN[0], _KNOWN[1], _UNKNOWN[1], _KNOWN[2]),
    ),
    "cautious": PromptTemplate(
        "cautious",
        "Answer with only the answer, in a few words. Wrong answers are heavily penalised: unless you are "
        "certain, reply: I don't know.",
        (_UNKNOWN[0], _KNOWN[0], _UNKNOWN[1], _UNKNOWN[2], _KNOWN[1]),
    ),
    "forced": PromptTemplate(
        "forced",
        "Answer with only the answer, in a few words. Always give your best guess; never say you don't know.",
        tuple(_KNOWN),
        permits_refusal=False,
    ),
}


# --------------------------------------------------------------------------------------------------
# Two-pass evaluation of a real backend
# --------------------------------------------------------------------------------------------------
@dataclass
class TwoPassOutcome:
    """Per-question results of a two-pass evaluation.

    Attributes:
        ids: Question ids.
        refused: ``R_i`` (pass 1 refused).
        wrong1: ``W_i`` (pass 1 answered wrongly; False where refused).
        correct1: Pass 1 answered correctly.
        wrong2: ``W'_i`` (forced answer wrong; only meaningful where refused).
        confidence: Log-prob confidence of the pass-1 answer, ``exp(mean token log-prob)``
            (NaN when the backend gives no log-probs).
        texts1: Pass-1 responses.
        texts2: Pass-2 responses (empty where not refused).
    """

    ids: list[str]
    refused: NDArray[np.bool_]
    wrong1: NDArray[np.bool_]
    correct1: NDArray[np.bool_]
    wrong2: NDArray[np.bool_]
    confidence: NDArray[np.float64]
    texts1: list[str] = field(default_factory=list)
    texts2: list[str] = field(default_factory=list)

    @property
    def would_be_wrong(self) -> NDArray[np.bool_]:
        """``Ŵ_i = R_i·W'_i + (1−R_i)·W_i``."""
        return np.where(self.refused, self.wrong2, self.wrong1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return {"ids": self.ids, "refused": self.refused.tolist(), "wrong1": self.wrong1.tolist(),
                "correct1": self.correct1.tolist(), "wrong2": self.wrong2.tolist(),
                "confidence": [None if not np.isfinite(c) else float(c) for c in self.confidence],
                "texts1": self.texts1, "texts2": self.texts2}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoPassOutcome:
        """Inverse of :meth:`to_dict`."""
        return cls(ids=list(d["ids"]), refused=np.asarray(d["refused"], bool), wrong1=np.asarray(d["wrong1"], bool),
                   correct1=np.asarray(d["correct1"], bool), wrong2=np.asarray(d["wrong2"], bool),
                   confidence=np.array([np.nan if c is None else c for c in d["confidence"]], float),
                   texts1=list(d.get("texts1", [])), texts2=list(d.get("texts2", [])))


def _confidence(c: Completion) -> float:
    m = c.mean_logprob
    return float(np.exp(m)) if m is not None else float("nan")


def evaluate_two_pass(
    backend: Backend,
    items: Sequence[QAItem],
    pass1: PromptTemplate,
    forced: PromptTemplate = PROMPTS["forced"],
    max_tokens: int = 16,
    store_path: str | Path | None = None,
) -> TwoPassOutcome:
    """Run the paper's two passes and grade them with the rule-based grader.

    Pass 2 (forced answer) runs only on the questions refused in pass 1. A forced answer that still
    refuses counts as wrong (it did not produce the gold answer). Forced answers do not depend on
    the pass-1 prompt, so with a store they are shared between pass-1 prompts.

    Args:
        backend: Any backend (greedy decoding).
        items: Questions.
        pass1: Refusal-permitting prompt.
        forced: Must-answer prompt (pass 2).
        max_tokens: Generation budget.
        store_path: JSONL where every answer is appended at once (resume); ``None`` keeps nothing.

    Raises:
        ValueError: ``pass1`` forbids refusal or ``forced`` permits it.
    """
    if not pass1.permits_refusal:
        raise ValueError(f"pass-1 prompt {pass1.name!r} must permit refusal")
    if forced.permits_refusal:
        raise ValueError(f"pass-2 prompt {forced.name!r} must forbid refusal")
    store = ResponseStore(store_path, backend.name) if store_path is not None else None
    req1 = [ChatRequest(pass1.messages(it.question), max_tokens=max_tokens, id=f"{pass1.name}/{it.id}") for it in items]
    comp1 = run_requests(backend, req1, store, desc=f"pass 1 ({pass1.name})")
    grades1 = [grade_answer(c.text, it.answers) for c, it in zip(comp1, items, strict=True)]
    refused = np.array([g == "refused" for g in grades1])
    wrong1 = np.array([g == "incorrect" for g in grades1])
    correct1 = np.array([g == "correct" for g in grades1])
    ref_idx = np.flatnonzero(refused)
    req2 = [ChatRequest(forced.messages(items[i].question), max_tokens=max_tokens, id=f"{forced.name}/{items[i].id}")
            for i in ref_idx]
    comp2 = run_requests(backend, req2, store, desc="pass 2 (forced)") if len(req2) else []
    wrong2 = np.zeros(len(items), dtype=bool)
    texts2 = [""] * len(items)
    for i, c in zip(ref_idx, comp2, strict=True):
        wrong2[i] = grade_answer(c.text, items[i].answers) != "correct"
        texts2[i] = c.text
    return TwoPassOutcome(ids=[it.id for it in items], refused=refused, wrong1=wrong1, correct1=correct1,
                          wrong2=wrong2, confidence=np.array([_confidence(c) for c in comp1]),
                          texts1=[c.text for c in comp1], texts2=texts2)


class TwoPassRefusalIndex:
    """The paper's RI estimator over a two-pass outcome (Gaussian copula, tetrachoric MLE, bootstrap CI).

    Args:
        n_boot: Bootstrap resamples (over questions) for the CI; 0 for none.
        ci: Confidence level.

    Attributes:
        estimate_: The last :class:`~trustlab.metrics.refusal.RIEstimate` (after :meth:`fit`).
    """

    def __init__(self, n_boot: int = 1000, ci: float = 0.95) -> None:
        if n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {n_boot}")
        if not 0.0 < ci < 1.0:
            raise ValueError(f"ci must be in (0, 1), got {ci}")
        self.n_boot = n_boot
        self.ci = ci
        self.estimate_: RIEstimate | None = None

    def fit(self, refused: NDArray[np.bool_], wrong1: NDArray[np.bool_], wrong2: NDArray[np.bool_],
            seed: int = 0) -> RIEstimate:
        """Estimate RI from ``R_i``, ``W_i`` (pass 1) and ``W'_i`` (pass 2); ``seed`` seeds the bootstrap."""
        counts = two_pass_counts(refused, wrong1, wrong2)
        from trustlab.metrics.refusal import refusal_index_from_counts

        self.estimate_ = refusal_index_from_counts(*counts, n_boot=self.n_boot, ci=self.ci, seed=seed)
        return self.estimate_

    def fit_outcome(self, outcome: TwoPassOutcome, seed: int = 0) -> RIEstimate:
        """:meth:`fit` on a :class:`TwoPassOutcome`."""
        return self.fit(outcome.refused, outcome.wrong1, outcome.wrong2, seed=seed)


# --------------------------------------------------------------------------------------------------
# Simulation suite: a model with known latent knowledge and refusal policy
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimPopulation:
    """Latent per-question state of a simulated model.

    Attributes:
        knowledge: ``k_i`` (standard normal): the model answers correctly iff ``k_i`` is high.
        confidence: ``c_i``: the model's self-assessed confidence, ``corr(c, k) = ρ`` for the
            Gaussian copula (or ``k`` plus Student-t noise for the misspecified variant).
    """

    knowledge: NDArray[np.float64]
    confidence: NDArray[np.float64]


@dataclass
class SimOutcome:
    """One simulated two-pass evaluation (see :class:`SimulatedLLM.evaluate`)."""

    refused: NDArray[np.bool_]
    wrong1: NDArray[np.bool_]
    wrong2: NDArray[np.bool_]
    correct1: NDArray[np.bool_]
    verbal_conf: NDArray[np.float64]
    ri_true: float


class SimulatedLLM:
    """A model with known latent knowledge and refusal policy.

    Per question, latent knowledge ``k_i`` and self-confidence ``c_i`` are drawn with correlation ρ.
    The error probability is ``w_i = Φ((u − k_i)/σ)`` with ``u = Φ⁻¹(μ)`` and the refusal
    probability under a prompt with refusal rate ``q`` is ``r_i = Φ((t_q − c_i)/σ)`` with
    ``t_q = Φ⁻¹(q)``: a prompt only moves the refusal threshold. Spearman is invariant to these
    monotone maps, so the **true RI is Spearman(c, k)** on the drawn questions, whatever σ.
    ``σ = 0`` is greedy decoding (refuse/err deterministically beyond the threshold: the paper's
    thresholded-latent model); ``σ > 0`` samples outcomes (temperature > 0).

    Args:
        latent_rho: ρ in (−1, 1).
        error_rate: μ in (0, 1).
        decoding_noise: σ >= 0.
        confidence_shift: Verbalised confidence ``Φ(c_i + shift)`` for the AUROC/ECE baselines.
        copula: ``"gaussian"`` or ``"t3"`` (confidence = knowledge + Student-t(3) noise: a
            non-Gaussian dependence, outside the estimator's model).
        cluster: Fraction of *overconfident* questions (0 for none): the model does not know them
            (knowledge well below the error threshold) yet is confident about them (confidence well
            above the refusal threshold), so it answers and errs. A non-Gaussian dependence.
        hetero: Spread of topic difficulty (0 for none): questions come from three equally likely
            topics whose knowledge is shifted by ``−hetero, 0, +hetero``, while the model's confidence
            tracks only the within-topic knowledge (it is blind to which topics are hard).
    """

    def __init__(self, latent_rho: float, error_rate: float, decoding_noise: float = 0.0,
                 confidence_shift: float = 1.0, copula: str = "gaussian", cluster: float = 0.0,
                 hetero: float = 0.0) -> None:
        if not -1.0 < latent_rho < 1.0:
            raise ValueError(f"latent_rho must be in (-1, 1), got {latent_rho}")
        if not 0.0 < error_rate < 1.0:
            raise ValueError(f"error_rate must be in (0, 1), got {error_rate}")
        if decoding_noise < 0:
            raise ValueError(f"decoding_noise must be >= 0, got {decoding_noise}")
        if copula not in ("gaussian", "t3"):
            raise ValueError(f"copula must be 'gaussian' or 't3', got {copula!r}")
        self.latent_rho = latent_rho
        self.error_rate = error_rate
        self.decoding_noise = decoding_noise
        self.confidence_shift = confidence_shift
        if not 0.0 <= cluster < 1.0 or hetero < 0:
            raise ValueError(f"cluster must be in [0, 1) and hetero >= 0, got {cluster}, {hetero}")
        self.copula = copula
        self.cluster = cluster
        self.hetero = hetero

    @property
    def gaussian(self) -> bool:
        """Whether the latent pair is the estimator's model (a standard bivariate normal)."""
        return self.copula == "gaussian" and self.cluster == 0 and self.hetero == 0

    def population(self, n: int, rng: np.random.Generator) -> SimPopulation:
        """Draw ``n`` questions' latent state."""
        k = rng.standard_normal(n)
        s = np.sqrt(1.0 - self.latent_rho**2)
        if self.copula == "gaussian":
            c = self.latent_rho * k + s * rng.standard_normal(n)
        else:  # same noise scale, heavy tails; standardised by its own marginal below
            c = self.latent_rho * k + s * rng.standard_t(3, n) / np.sqrt(3.0)
            c = (c - c.mean()) / c.std()
        if self.hetero > 0:  # topic difficulty shifts knowledge; confidence sees only the within-topic part
            k = k + self.hetero * (rng.integers(0, 3, n) - 1.0)
        if self.cluster > 0:  # overconfident questions: unknown, yet confidently answered
            m = rng.random(n) < self.cluster
            k[m] = -1.0 - 0.5 * np.abs(rng.standard_normal(int(m.sum())))
            c[m] = 1.0 + 0.5 * np.abs(rng.standard_normal(int(m.sum())))
        return SimPopulation(knowledge=k, confidence=c)

    def _prob(self, threshold: float, latent: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.decoding_noise == 0:
            return (latent < threshold).astype(float)
        return special.ndtr((threshold - latent) / self.decoding_noise)

    def probabilities(self, pop: SimPopulation, refusal_rate: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-question ``(r_i, w_i)`` at a prompt with (population) refusal rate ``refusal_rate``."""
        c_thr = float(np.quantile(pop.confidence, refusal_rate)) if self.copula != "gaussian" or not self.gaussian \
            else float(special.ndtri(refusal_rate))
        k_thr = float(np.quantile(pop.knowledge, self.error_rate)) if self.cluster or self.hetero else float(
            special.ndtri(self.error_rate))
        return self._prob(c_thr, pop.confidence), self._prob(k_thr, pop.knowledge)

    def evaluate(self, pop: SimPopulation, refusal_rate: float, rng: np.random.Generator) -> SimOutcome:
        """One two-pass evaluation: pass 1 at ``refusal_rate``; pass 2 re-asks refused questions (fresh draws)."""
        r, w = self.probabilities(pop, refusal_rate)
        refused = rng.random(r.size) < r
        w1 = rng.random(w.size) < w
        w2 = rng.random(w.size) < w if self.decoding_noise > 0 else w1.copy()
        wrong1 = w1 & ~refused
        correct1 = ~w1 & ~refused
        conf = special.ndtr(pop.confidence + self.confidence_shift)
        return SimOutcome(refused=refused, wrong1=wrong1, wrong2=w2, correct1=correct1, verbal_conf=conf,
                          ri_true=spearman(pop.confidence, pop.knowledge))

    def direct_ri(self, pop: SimPopulation, refusal_rate: float, samples: int, rng: np.random.Generator) -> float:
        """The direct RI from ``samples`` independent samples per question: Spearman of the empirical
        refusal and error frequencies (the paper's "expensive ground truth" comparator)."""
        r, w = self.probabilities(pop, refusal_rate)
        fr = rng.binomial(samples, r) / samples
        fw = rng.binomial(samples, w) / samples
        return spearman(fr, fw)


def estimate_sim(outcome: SimOutcome, n_boot: int, ci: float, seed: int) -> RIEstimate:
    """Two-pass RI of a simulated outcome."""
    return refusal_index(np.asarray(outcome.refused), np.where(outcome.refused, outcome.wrong2, outcome.wrong1),
                         n_boot=n_boot, ci=ci, seed=seed)
