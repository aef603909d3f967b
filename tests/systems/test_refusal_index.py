"""Refusal Index: smoke run (simulation), two-pass pipeline on a scripted backend, data loaders, grading."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from trustlab.data.factual_qa import CARD, QAItem, load_factual_qa, load_qa_file, sample_items
from trustlab.errors import UserError
from trustlab.llm.base import Backend, ChatRequest, Completion
from trustlab.llm.grading import grade_answer, is_refusal, matches_gold, normalize_answer
from trustlab.metrics.refusal import refusal_index_from_counts, two_pass_counts
from trustlab.runner import run_system
from trustlab.systems.refusal_index.baselines import baseline_metrics
from trustlab.systems.refusal_index.method import (
    PROMPTS,
    SimulatedLLM,
    TwoPassRefusalIndex,
    evaluate_two_pass,
)


def test_smoke_run_reproduces_the_paper_ordering(tmp_path: Path) -> None:
    rec, out = run_system("refusal-index", "smoke", out=tmp_path / "run")
    claims = {c["id"]: c for c in rec.claims}
    assert claims["C1"]["holds"], claims["C1"]["figures"]  # two-pass RI within ±0.05 of the truth
    assert claims["C3"]["holds"]  # Spearman == scipy
    f = claims["C2"]["figures"]
    # RI moves less than every refusal-rate-based metric when only the refusal rate changes
    assert f["ri_range"] <= 0.05
    assert all(f[f"cv_{m}"] > f["cv_ri"] for m in ("accuracy", "c_given_a", "weighted"))
    assert f["range_c_given_a"] > 0.1 and f["range_accuracy"] > 0.1
    # the paper's ranking argument: RI keeps A above B at every B refusal rate; the F-score order flips
    assert claims["C5"]["holds"], claims["C5"]["figures"]
    # stochastic decoding attenuates the two-pass estimate; the many-sample direct RI does better
    diag = next(s for s in rec.summary if s["setting"] == "sim;refusal_rate=0.3;noise=0.5")
    assert diag["ri_est_mean"] < diag["ri_true_mean"] - 0.05
    assert abs(diag["ri_direct_mean"] - diag["ri_true_mean"]) < abs(diag["ri_est_mean"] - diag["ri_true_mean"])
    res = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"two_pass"}
    assert (out / "plots" / "ri_vs_refusal_rate.png").is_file() and (out / "plots" / "iso_ri.png").is_file()
    rec2, _ = run_system("refusal-index", "smoke", out=tmp_path / "run")  # resume: every unit reused
    assert rec2.rows == rec.rows


class ScriptedLLM(Backend):
    """Knows the answers to questions whose id is in ``known``; refuses per ``refuse`` unless forced."""

    name = "scripted"

    def __init__(self, items: Sequence[QAItem], known: set[str], refuse: set[str]) -> None:
        self.by_q = {it.question: it for it in items}
        self.known, self.refuse = known, refuse
        self.forced_calls = 0

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        out = []
        for r in requests:
            it = self.by_q[r.messages[-1]["content"]]
            forced = "never say you don't know" in r.messages[0]["content"]
            self.forced_calls += forced
            if not forced and it.id in self.refuse:
                out.append(Completion("I don't know.", logprob=-3.0, n_tokens=3))
            elif it.id in self.known:
                out.append(Completion(f"It is {it.answers[0]}.", logprob=-0.5, n_tokens=4))
            else:
                out.append(Completion("Zanzibar", logprob=-2.0, n_tokens=2))
        return out


def test_two_pass_pipeline_on_scripted_backend(tmp_path: Path) -> None:
    items = [QAItem(f"q{i}", f"Question number {i}?", (f"answer{i}",)) for i in range(40)]
    known = {f"q{i}" for i in range(0, 40, 2)}  # knows the even ones
    refuse = {f"q{i}" for i in range(1, 40, 4)} | {"q0", "q4"}  # mostly refuses what it does not know
    llm = ScriptedLLM(items, known, refuse)
    out = evaluate_two_pass(llm, items, PROMPTS["standard"], store_path=tmp_path / "ans.jsonl")
    assert out.refused.sum() == len(refuse) and llm.forced_calls == len(refuse)  # pass 2 only on refused
    wbw = np.array([it.id not in known for it in items])
    np.testing.assert_array_equal(out.would_be_wrong, wbw)
    est = TwoPassRefusalIndex(n_boot=0).fit_outcome(out)
    assert est.counts == two_pass_counts(out.refused, out.wrong1, out.wrong2) == (10, 2, 10, 18)
    assert est.ri == pytest.approx(refusal_index_from_counts(10, 2, 10, 18, n_boot=0).ri) and est.ri > 0.3
    # rerun from the stored answers: no new generation
    llm2 = ScriptedLLM(items, set(), set())
    again = evaluate_two_pass(llm2, items, PROMPTS["standard"], store_path=tmp_path / "ans.jsonl")
    assert llm2.forced_calls == 0 and again.texts1 == out.texts1
    m = baseline_metrics(out.refused, out.correct1, out.confidence)
    assert m["refusal_rate"] == pytest.approx(12 / 40) and m["c_given_a"] == pytest.approx(18 / 28)


def test_simulated_llm_true_ri_and_invariance() -> None:
    model = SimulatedLLM(0.5, 0.6)
    pop = model.population(3000, np.random.default_rng(0))
    a = model.evaluate(pop, 0.1, np.random.default_rng(1))
    b = model.evaluate(pop, 0.6, np.random.default_rng(1))
    assert a.ri_true == b.ri_true  # the model is unchanged; only the refusal threshold moved
    assert abs(a.refused.mean() - 0.1) < 0.03 and abs(b.refused.mean() - 0.6) < 0.03
    np.testing.assert_array_equal(np.where(a.refused, a.wrong2, a.wrong1), np.where(b.refused, b.wrong2, b.wrong1))
    with pytest.raises(ValueError):
        SimulatedLLM(1.0, 0.5)


def test_grading_and_refusal_detection() -> None:
    assert normalize_answer("  The Bogotá, D.C.! ") == "bogota d c"
    assert grade_answer("The capital of France is Paris.", ["Paris"]) == "correct"
    assert grade_answer("I'm not sure, but I think it is Paris", ["Paris"]) == "correct"  # hedged but right
    assert grade_answer("I don't know.", ["Paris"]) == "refused"
    assert grade_answer("", ["Paris"]) == "refused"
    assert grade_answer("Lyon", ["Paris"]) == "incorrect"
    assert grade_answer("Parisian", ["Paris"]) == "incorrect"  # whole words only
    assert matches_gold("The code is 33.", ["+33", "33"]) and matches_gold("+33", ["+33"])
    assert is_refusal("I cannot answer that question") and is_refusal("Sorry, I'm unable to determine it")
    assert not is_refusal("Au")


def test_judge_grader_parses_and_leaves_garbage_unscored() -> None:
    from trustlab.llm.grading import JudgeGrader

    class Judge(Backend):
        name = "judge"

        def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
            return [Completion(t) for t in ("A", "(b) wrong", "I think maybe")[: len(requests)]]

    grades = JudgeGrader(Judge()).grade(["q1", "q2", "q3"], [["x"], ["y"], ["z"]], ["x", "w", "?"])
    assert grades == ["correct", "incorrect", None]


def test_embedded_data_and_user_formats(tmp_path: Path) -> None:
    items = load_factual_qa()
    assert len(items) == CARD["n"] == 1026 and all(it.answers for it in items)
    assert len({it.id for it in items}) == len(items)
    sub = sample_items(items, 16, seed=0)
    assert len(sub) == 16 and len({it.category for it in sub}) == 8  # stratified over the 8 categories
    (tmp_path / "s.csv").write_text('problem,answer\n"Who wrote Hamlet?",William Shakespeare\n')
    (tmp_path / "t.jsonl").write_text(json.dumps({"question": "Q?", "answer": {"value": "A", "aliases": ["a1"]}}) + "\n")
    (tmp_path / "n.jsonl").write_text(json.dumps({"question": "Q?", "answer": ["x", "y"]}) + "\n")
    (tmp_path / "p.csv").write_text('id,question,possible_answers\n7,Q?,"[""p"", ""q""]"\n')
    assert load_qa_file(tmp_path / "s.csv")[0].answers == ("William Shakespeare",)
    assert load_qa_file(tmp_path / "t.jsonl")[0].answers == ("A", "a1")
    assert load_qa_file(tmp_path / "n.jsonl")[0].answers == ("x", "y")
    assert load_qa_file(tmp_path / "p.csv")[0].answers == ("p", "q")
    (tmp_path / "bad.jsonl").write_text('{"question": "ok?", "answers": ["a"]}\n{"question": "", "answers": ["b"]}\n')
    with pytest.raises(UserError, match="row 2"):
        load_qa_file(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"question": "ok?", "answers": ["a"]}\n{not json\n')
    with pytest.raises(UserError, match="line 2"):
        load_qa_file(tmp_path / "broken.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        load_qa_file(tmp_path / "missing.csv")


def test_config_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="prompt"):
        run_system("refusal-index", "smoke", overrides=["real.prompts=[polite]"], out=tmp_path / "a")
    with pytest.raises(UserError, match="base_url"):
        run_system("refusal-index", "smoke", overrides=["real.enabled=true", "real.backend=openai"], out=tmp_path / "b")
    with pytest.raises(UserError, match="refusal_rates"):
        run_system("refusal-index", "smoke", overrides=["sim.refusal_rates=[0.0, 0.5]"], out=tmp_path / "c")
