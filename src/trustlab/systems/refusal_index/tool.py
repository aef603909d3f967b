"""The evaluator behind ``trustlab refusal-index``: two passes on a user's model and QA file, nothing else.

:func:`evaluate` asks every question with each refusal-permitting prompt (pass 1), re-asks the
refused ones with the forced prompt (pass 2), grades every answer (rule grader, or a judge model
with its agreement to the rule grader), and returns a report: RI with its bootstrap interval,
refusal rate, accuracy, C/A, F-score, ECE/AUROC of the log-prob confidence where the backend gives
log-probs. With ``temperature > 0`` every question is asked ``samples`` times in both passes and the
many-sample (direct) RI is reported beside the two-pass one.

Answers are cached in an append-only JSONL keyed on (model identity, prompt messages incl. the
question, decoding settings): not on the endpoint URL, the concurrency or the timeouts, so a rerun
against the same model anywhere resumes without asking any question twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.data.factual_qa import QAItem
from trustlab.llm.base import Backend, ChatRequest, Completion
from trustlab.llm.grading import JUDGE_TEMPLATE, Grade, grade_answer
from trustlab.llm.runner import run_requests
from trustlab.llm.store import ResponseStore
from trustlab.metrics.refusal import RIEstimate, spearman
from trustlab.systems.refusal_index.baselines import baseline_metrics
from trustlab.systems.refusal_index.method import PROMPTS, TwoPassRefusalIndex
from trustlab.utils.io import atomic_write_json, atomic_write_text
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

GRADES_SIMPLEQA = {"correct": "CORRECT", "incorrect": "INCORRECT", "refused": "NOT_ATTEMPTED"}


@dataclass
class Decoding:
    """Decoding settings (part of the cache key).

    Attributes:
        max_tokens: Generation budget per answer.
        temperature: 0 = greedy (one answer per question and pass); > 0 needs ``samples >= 2``.
        samples: Answers per question and pass at ``temperature > 0`` (seeds ``0..samples-1``).
    """

    max_tokens: int = 24
    temperature: float = 0.0
    samples: int = 1


class JudgeGrader:
    """SimpleQA-style judge (A correct / B incorrect / C not attempted) through any backend, cached.

    Args:
        backend: The judge model's backend (greedy).
        identity: The judge's model identity (cache key).
        store: Where judge replies are cached (shared with the answers cache is fine).
        batch_size: Requests per backend call.
    """

    def __init__(self, backend: Backend, identity: str, store: ResponseStore | None, batch_size: int = 16) -> None:
        self.backend, self.identity, self.store, self.batch_size = backend, identity, store, batch_size
        self.unparsed = 0

    def grade(self, items: Sequence[QAItem], texts: Sequence[str]) -> list[Grade | None]:
        """Grades; ``None`` where the judge's reply is not A/B/C (unscored, never counted as a refusal)."""
        import re

        reqs = [ChatRequest(({"role": "user", "content": JUDGE_TEMPLATE.format(
            question=it.question, gold=" | ".join(it.answers), response=t)},), max_tokens=4, id=f"judge/{it.id}")
            for it, t in zip(items, texts, strict=True)]
        comps = run_requests(self.backend, reqs, self.store, batch_size=self.batch_size, desc="judge")
        out: list[Grade | None] = []
        for c in comps:
            m = re.match(r"\s*\(?([ABCabc])\b", c.text)
            out.append(None if m is None else {"a": "correct", "b": "incorrect", "c": "refused"}[m.group(1).lower()])
        self.unparsed += sum(g is None for g in out)
        return out


def _requests(prompt: str, items: Sequence[QAItem], dec: Decoding) -> list[ChatRequest]:
    tpl = PROMPTS[prompt]
    n = dec.samples if dec.temperature > 0 else 1
    return [ChatRequest(tpl.messages(it.question), max_tokens=dec.max_tokens, temperature=dec.temperature,
                        id=f"{prompt}/{it.id}" + (f"/s{s}" if n > 1 else ""), seed=s)
            for it in items for s in range(n)]


def _confidence(c: Completion) -> float:
    m = c.mean_logprob
    return float(np.exp(m)) if m is not None else float("nan")


def _boot_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, x.size, x.size)
        v = spearman(x[i], y[i])
        if math.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    a = (1 - ci) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def _agreement(rule: list[Grade], judge: list[Grade | None]) -> dict[str, Any]:
    pairs = [(r, j) for r, j in zip(rule, judge, strict=True) if j is not None]
    labels = ("correct", "incorrect", "refused")
    conf = {f"rule={a},judge={b}": sum(1 for r, j in pairs if r == a and j == b) for a in labels for b in labels}
    n = len(pairs)
    agree = sum(r == j for r, j in pairs) / n if n else float("nan")
    pe = sum((sum(r == lab for r, _ in pairs) / n) * (sum(j == lab for _, j in pairs) / n) for lab in labels) if n else 0
    kappa = (agree - pe) / (1 - pe) if n and pe < 1 else float("nan")
    return {"n_graded_by_both": n, "n_judge_unparsed": len(judge) - n, "agreement": agree, "cohen_kappa": kappa,
            "confusion": conf}


def _estimate_dict(est: RIEstimate) -> dict[str, Any]:
    d = est.to_dict()
    return {"ri": d["ri"], "ri_ci_low": d["ci_low"], "ri_ci_high": d["ci_high"], "ri_boundary": d["boundary"],
            "ri_undefined_reason": d["undefined_reason"], "counts_n11_n10_n01_n00": d["counts"],
            "would_be_error_rate": d["error_rate"], "rho": d["rho"]}


def evaluate(
    backend: Backend,
    identity: str,
    items: Sequence[QAItem],
    out: Path,
    prompts: Sequence[str] = ("standard",),
    decoding: Decoding | None = None,
    judge: JudgeGrader | None = None,
    cache: Path | None = None,
    concurrency: int = 1,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the two passes and write ``report.json`` and ``samples.jsonl`` into ``out``.

    Args:
        backend: Answers the questions.
        identity: The answering model's identity (labels the results; part of the cache key).
        items: Questions.
        out: Output folder (created).
        prompts: Pass-1 prompt names (each gets its own RI); pass 2 uses ``forced``.
        decoding: Decoding settings.
        judge: Grade with this judge instead of the rule grader (the rule grades are kept for agreement).
        cache: The answer cache (default ``out/answers.jsonl``).
        concurrency: Requests per backend call batch are ``4 × concurrency``.
        n_boot: Bootstrap resamples for the intervals.
        ci: Interval level.
        seed: Bootstrap seed.
        meta: Extra fields for the report (source, data file, ...).

    Raises:
        BackendError: the backend failed; every answer finished before is in the cache.
    """
    dec = decoding or Decoding()
    k = dec.samples if dec.temperature > 0 else 1
    out.mkdir(parents=True, exist_ok=True)
    store = ResponseStore(cache or out / "answers.jsonl", identity)
    n_cached0 = len(store)
    t0 = time.perf_counter()
    bs = max(1, 4 * concurrency)
    samples: list[dict[str, Any]] = []
    rule_all: list[Grade] = []
    judge_all: list[Grade | None] = []

    def grade(its: Sequence[QAItem], texts: Sequence[str]) -> tuple[list[Grade | None], list[Grade]]:
        rule = [grade_answer(t, it.answers) for it, t in zip(its, texts, strict=True)]
        if judge is None:
            return list(rule), rule
        jg = judge.grade(its, texts)
        rule_all.extend(rule)
        judge_all.extend(jg)
        return jg, rule

    def record(its: Sequence[QAItem], reqs: Sequence[ChatRequest], comps: Sequence[Completion], pass_no: int,
               prompt: str, grades: Sequence[Grade | None], rule: Sequence[Grade]) -> None:
        for it, r, c, g, rg in zip(its, reqs, comps, grades, rule, strict=True):
            row = {"question_id": it.id, "question": it.question, "gold": list(it.answers), "pass": pass_no,
                   "prompt": prompt, "sample": r.seed if k > 1 else 0, "answer": c.text,
                   "grade": None if g is None else GRADES_SIMPLEQA[g]}
            if judge is not None:
                row["rule_grade"] = GRADES_SIMPLEQA[rg]
            samples.append(row)

    # forced answers per question id: [(grade, rule grade)] per sample; shared between pass-1 prompts.
    # With k samples pass 2 runs on every question (the many-sample RI needs each question's error rate).
    forced: dict[str, list[tuple[Grade | None, Grade]]] = {}

    def ask_forced(its: Sequence[QAItem], desc: str) -> None:
        if not its:
            return
        reqs = _requests("forced", its, dec)
        comps = run_requests(backend, reqs, store, batch_size=bs, desc=desc)
        its_k = [it for it in its for _ in range(k)]
        g2, r2 = grade(its_k, [c.text for c in comps])
        record(its_k, reqs, comps, 2, "forced", g2, r2)
        for i, it in enumerate(its):
            forced[it.id] = list(zip(g2[i * k:(i + 1) * k], r2[i * k:(i + 1) * k], strict=True))

    if k > 1:
        ask_forced(list(items), "pass 2 (forced, all questions)")

    def two_pass(g1: Sequence[Grade | None], which: int, conf: np.ndarray, boot_seed: int) -> dict[str, Any]:
        """RI and baselines from pass-1 grades ``g1`` and the forced grades (``which``: 0 = grader, 1 = rule)."""
        f2 = [forced[it.id][0][which] if g == "refused" else "correct" for it, g in zip(items, g1, strict=True)]
        m = np.array([g is not None and w is not None for g, w in zip(g1, f2, strict=True)])
        refused = np.array([g == "refused" for g in g1])[m]
        wrong1 = np.array([g == "incorrect" for g in g1])[m]
        correct1 = np.array([g == "correct" for g in g1])[m]
        wrong2 = np.array([w != "correct" for w in f2])[m]
        est = TwoPassRefusalIndex(n_boot, ci).fit(refused, wrong1, wrong2, seed=boot_seed)
        return {"n_scored": int(m.sum()), **_estimate_dict(est), **baseline_metrics(refused, correct1, conf[m])}

    results: dict[str, Any] = {}
    for p_i, prompt in enumerate(prompts):
        reqs1 = _requests(prompt, items, dec)
        comps1 = run_requests(backend, reqs1, store, batch_size=bs, desc=f"pass 1 ({prompt})")
        its1 = [it for it in items for _ in range(k)]
        g1_all, r1_all = grade(its1, [c.text for c in comps1])
        record(its1, reqs1, comps1, 1, prompt, g1_all, r1_all)
        g1, rg1 = g1_all[::k], r1_all[::k]  # sample 0: the two-pass estimate uses one answer per question/pass
        conf = np.array([_confidence(c) for c in comps1[::k]])
        ask_forced([it for it, g, r in zip(items, g1, rg1, strict=True)
                    if (g == "refused" or r == "refused") and it.id not in forced], f"pass 2 (forced, {prompt} refusals)")
        res = two_pass(g1, 0, conf, seed + p_i)
        res["logprobs"] = bool(np.isfinite(conf).any())
        if judge is not None:  # the same estimate under the rule grader, for comparison
            rr = two_pass(list(rg1), 1, conf, seed + p_i)
            res["rule_grader"] = {key: rr.get(key) for key in ("ri", "ri_ci_low", "ri_ci_high", "refusal_rate",
                                                               "accuracy", "c_given_a", "f_score")}
        if k > 1:
            rf = np.array([np.mean([g == "refused" for g in g1_all[i * k:(i + 1) * k] if g is not None] or [np.nan])
                           for i in range(len(items))])
            wf = np.array([np.mean([g != "correct" for g, _ in forced[it.id] if g is not None] or [np.nan])
                           for it in items])
            ok = np.isfinite(rf) & np.isfinite(wf)
            enough = ok.sum() > 2
            ri_many = spearman(rf[ok], wf[ok]) if enough else float("nan")
            lo, hi = (_boot_spearman(rf[ok], wf[ok], min(n_boot, 300), ci, seed + 100 + p_i) if enough
                      else (float("nan"), float("nan")))
            res["many_sample"] = {"ri": ri_many, "ri_ci_low": lo, "ri_ci_high": hi, "samples_per_question": k,
                                  "mean_refusal_freq": float(np.nanmean(rf)),
                                  "mean_forced_error_freq": float(np.nanmean(wf))}
        results[prompt] = res
    wall = time.perf_counter() - t0
    report: dict[str, Any] = {
        "model": identity, **(meta or {}), "n_questions": len(items), "prompts": list(prompts),
        "pass2_prompt": "forced", "grader": "judge" if judge is not None else "rule", "decoding": dict(dec.__dict__),
        "ci_level": ci, "n_boot": n_boot, "results": results,
        "requests": {"answers_asked_now": len(store) - n_cached0, "answers_in_cache_before": n_cached0,
                     "cache": str(store.path)},
        "wall_s": wall,
    }
    if judge is not None:
        report["judge"] = {"model": judge.identity, **_agreement(rule_all, judge_all)}
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    atomic_write_json(out / "report.json", report)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines of a report."""
    lines = [f"model {report['model']}: {report['n_questions']} questions, grader {report['grader']}"]
    for p, r in report["results"].items():
        if r.get("ri") is None or (isinstance(r.get("ri"), float) and not math.isfinite(r["ri"])):
            ri = f"RI undefined ({r.get('ri_undefined_reason')})"
        else:
            ri = f"RI {r['ri']:.3f} [{r['ri_ci_low']:.3f}, {r['ri_ci_high']:.3f}]"
        extra = "".join(f", {k} {r[k]:.3f}" for k in ("auroc_conf", "ece_conf") if k in r)
        lines.append(f"  {p}: {ri}, refusal rate {r.get('refusal_rate', float('nan')):.3f}, accuracy "
                     f"{r.get('accuracy', float('nan')):.3f}, C/A {r.get('c_given_a', float('nan')):.3f}, "
                     f"F {r.get('f_score', float('nan')):.3f}{extra}")
        if "many_sample" in r:
            ms = r["many_sample"]
            lines.append(f"    many-sample RI ({ms['samples_per_question']} samples/question) {ms['ri']:.3f} "
                         f"[{ms['ri_ci_low']:.3f}, {ms['ri_ci_high']:.3f}]")
    if "judge" in report:
        j = report["judge"]
        lines.append(f"  judge {j['model']} vs rule grader: agreement {j['agreement']:.3f}, kappa {j['cohen_kappa']:.3f} "
                     f"({j['n_graded_by_both']} answers, {j['n_judge_unparsed']} unparsed)")
    return lines
