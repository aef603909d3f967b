"""A built-in toy QA "model" (``--model toy``): a lookup table with known knowledge and refusal policy.

It answers questions of a given QA set without any weights, so the tool's demo, tests and
benchmark run offline in milliseconds and still produce a meaningful Refusal Index (a random tiny
LM never refuses and never answers correctly, so its RI is undefined). Per question it draws, from
a hash of (seed, question), latent knowledge ``k`` and self-confidence ``c = ρ·k + √(1−ρ²)·e``:

* it *knows* the answer iff ``k > Φ⁻¹(μ)`` (``μ`` = would-be error rate), else it gives a wrong
  answer (another question's gold answer from the same category);
* under a prompt that permits refusal it says "I don't know." iff ``c < Φ⁻¹(q)``, with ``q`` the
  prompt's refusal rate (0.3 for ``standard``, 0.5 for ``cautious``, recognised from the system
  prompt); a prompt that forbids refusal is always answered;
* at temperature ``T > 0`` both decisions are sampled: ``P(wrong) = Φ((Φ⁻¹(μ) − k)/T)`` and
  ``P(refuse) = Φ((Φ⁻¹(q) − c)/T)``, seeded by the request's seed;
* its log-prob confidence is ``Φ(c + 0.5)`` (mildly over-confident), so ECE/AUROC exist.

Its population RI is ``(6/π)·asin(ρ/2)`` (0.58 at ρ = 0.6). It is a fixture, not a model of an LLM.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from trustlab.data.factual_qa import QAItem
from trustlab.llm.base import Backend, ChatRequest, Completion


def _unit_normals(*parts: object, n: int = 2) -> np.ndarray:
    h = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal(n)


class ToyQABackend(Backend):
    """A lookup-table model over ``items`` (see the module docstring).

    Args:
        items: The questions it can be asked (others get "I don't know." / a fixed wrong guess).
        rho: Correlation of self-confidence with knowledge.
        error_rate: Would-be error rate μ.
        refusal_rates: Refusal rate per recognised prompt kind (``standard``, ``cautious``).
        seed: Seeds the per-question latents (a different seed is a different "model").
        name: Reported model name.
    """

    def __init__(self, items: Sequence[QAItem], rho: float = 0.6, error_rate: float = 0.5,
                 refusal_rates: dict[str, float] | None = None, seed: int = 0, name: str = "toy-qa") -> None:
        if not -1.0 < rho < 1.0 or not 0.0 < error_rate < 1.0:
            raise ValueError("rho must be in (-1, 1) and error_rate in (0, 1)")
        self.rho, self.error_rate, self.seed, self.name = rho, error_rate, seed, name
        self.refusal_rates = {"standard": 0.3, "cautious": 0.5, **(refusal_rates or {})}
        self.batch_size = 64
        self.by_question = {it.question: it for it in items}
        by_cat: dict[str, list[str]] = {}
        for it in items:
            by_cat.setdefault(it.category, []).append(it.answers[0])
        self._wrong: dict[str, str] = {}
        for it in items:
            pool = [a for a in by_cat[it.category] if a not in it.answers]
            j = int(_unit_normals(seed, "wrong", it.question, n=1)[0] * 1e6) % len(pool) if pool else 0
            self._wrong[it.question] = pool[j] if pool else "Atlantis"

    def latents(self, item: QAItem) -> tuple[float, float]:
        """``(k, c)`` of one question."""
        z = _unit_normals(self.seed, "latent", item.question)
        k = float(z[0])
        return k, float(self.rho * k + math.sqrt(1 - self.rho**2) * z[1])

    def _prompt_rate(self, system: str) -> float | None:
        s = system.lower()
        if "don't know" not in s or "never say" in s:
            return None  # forbids refusal
        return self.refusal_rates["cautious" if "penalised" in s or "certain" in s else "standard"]

    def _decide(self, latent: float, threshold: float, temperature: float, *seed_parts: object) -> bool:
        """``latent < threshold`` (greedy) or a draw with probability Φ((threshold − latent)/T)."""
        if temperature <= 0:
            return latent < threshold
        u = special.ndtr(float(_unit_normals(self.seed, *seed_parts, n=1)[0]))
        return bool(u < special.ndtr((threshold - latent) / temperature))

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer each request from the table."""
        out = []
        for r in requests:
            system = next((m["content"] for m in r.messages if m["role"] == "system"), "")
            question = [m["content"] for m in r.messages if m["role"] == "user"][-1]
            rate = self._prompt_rate(system)
            item = self.by_question.get(question)
            if item is None:
                out.append(Completion("I don't know." if rate is not None else "42", logprob=math.log(0.5), n_tokens=1))
                continue
            k, c = self.latents(item)
            conf = float(special.ndtr(c + 0.5))
            t = r.temperature
            if rate is not None and self._decide(c, float(special.ndtri(rate)), t, "refuse", item.question, r.seed, rate):
                out.append(Completion("I don't know.", logprob=math.log(1 - conf + 1e-9), n_tokens=1))
                continue
            wrong = self._decide(k, float(special.ndtri(self.error_rate)), t, "err", item.question, r.seed, rate is None)
            text = self._wrong[item.question] if wrong else item.answers[0]
            out.append(Completion(text, logprob=math.log(conf), n_tokens=1))
        return out
