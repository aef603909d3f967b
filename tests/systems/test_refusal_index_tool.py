"""``trustlab refusal-index``: the evaluator verb against a loopback OpenAI-compatible server.

The model behind the server is the built-in toy QA model (known latent knowledge and confidence,
so its true RI is known); the server counts the requests it receives, so "never asked twice" is
checked at the server.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trustlab.cli import main
from trustlab.data.factual_qa import QAItem, load_factual_qa, sample_items
from trustlab.llm.base import Backend, ChatRequest, Completion
from trustlab.llm.grading import grade_answer
from trustlab.llm.server import OpenAICompatServer
from trustlab.metrics.refusal import spearman
from trustlab.systems.refusal_index.toy import ToyQABackend


@pytest.fixture(scope="module")
def items() -> list[QAItem]:
    return sample_items(load_factual_qa(), 160, seed=3)


@pytest.fixture()
def qa_csv(tmp_path: Path, items: list[QAItem]) -> Path:
    """The questions in SimpleQA's CSV layout (metadata, problem, answer)."""
    p = tmp_path / "simple_qa_test_set.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["metadata", "problem", "answer"])
        for it in items:
            w.writerow([json.dumps({"topic": it.category}), it.question, it.answers[0]])
    return p


@pytest.fixture()
def server(items: list[QAItem]) -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served") as srv:
        yield srv


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _run(*args: str) -> int:
    return main(["refusal-index", "--n-boot", "200", *args])


def test_verb_on_endpoint_reports_ri_and_baselines_labelled_with_the_served_model(
        server: OpenAICompatServer, qa_csv: Path, tmp_path: Path, items: list[QAItem]) -> None:
    out = tmp_path / "ri"
    assert _run("--base-url", server.base_url, "--data", str(qa_csv), "--out", str(out),
                "--prompts", "standard,cautious", "--concurrency", "4") == 0
    rep = _report(out)
    assert rep["model"] == "toy-served" and rep["endpoint"] == server.base_url  # asked /v1/models
    toy = ToyQABackend(items)
    lat = np.array([toy.latents(it) for it in items])
    true_ri = spearman(lat[:, 1], lat[:, 0])  # RI of the toy's decisions = Spearman(confidence, knowledge)
    for p, expect_rate in (("standard", 0.3), ("cautious", 0.5)):
        r = rep["results"][p]
        assert r["n_scored"] == len(items)
        assert r["ri_ci_low"] <= true_ri <= r["ri_ci_high"], (p, r["ri"], true_ri)
        assert abs(r["refusal_rate"] - expect_rate) < 0.12
        for k in ("accuracy", "c_given_a", "f_score", "auroc_conf", "ece_conf"):  # log-probs came over HTTP
            assert k in r
    assert rep["results"]["cautious"]["refusal_rate"] > rep["results"]["standard"]["refusal_rate"]
    s = _samples(out)
    assert {"question", "pass", "prompt", "answer", "grade"} <= set(s[0])
    refused = {(x["prompt"], x["question_id"]) for x in s if x["pass"] == 1 and x["grade"] == "NOT_ATTEMPTED"}
    forced = {x["question_id"] for x in s if x["pass"] == 2}
    assert {q for _, q in refused} == forced  # pass 2 asked exactly the refused questions (shared by prompts)
    # grades are the rule grader's on the stored answers
    gold = {x["question_id"]: x["gold"] for x in s}
    names = {"correct": "CORRECT", "incorrect": "INCORRECT", "refused": "NOT_ATTEMPTED"}
    assert all(names[grade_answer(x["answer"], gold[x["question_id"]])] == x["grade"] for x in s)
    # the served numbers equal the in-process toy's (same model, no HTTP)
    out2 = tmp_path / "local"
    assert _run("--model", "toy", "--data", str(qa_csv), "--out", str(out2), "--prompts", "standard,cautious") == 0
    assert _report(out2)["results"]["standard"]["ri"] == pytest.approx(rep["results"]["standard"]["ri"])
    assert server.requests_received == len(items) * 2 + len(forced)


def test_cache_survives_port_and_concurrency_changes_and_a_dead_endpoint(
        items: list[QAItem], qa_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ri"
    args = ("--data", str(qa_csv), "--out", str(out), "--retries", "1", "--backoff", "0.01")
    # an endpoint that dies after 70 answers and stays down: one-line error, exit 2, answers kept
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served",
                            fault=lambda n: "500" if n > 70 else None) as dying:
        assert _run("--base-url", dying.base_url, "--concurrency", "2", *args) == 2
    err = capsys.readouterr().err.strip()
    # retry warnings may precede it (logging on stderr); the error itself is one line, with no traceback
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "answers so far are kept" in last and "rerun the same command" in last
    assert "Traceback" not in err
    kept = len((out / "answers.jsonl").read_text().splitlines())
    assert kept >= 60
    # restarted on another port, other concurrency and timeout: resumes, nothing asked twice
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served") as srv2:
        assert srv2.base_url != dying.base_url
        assert _run("--base-url", srv2.base_url, "--concurrency", "5", "--timeout", "30", *args) == 0
        first = _report(out)
        n_unique = len({(x["pass"], x["prompt"], x["question_id"]) for x in _samples(out)})
        assert srv2.requests_received == n_unique - kept
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served") as srv3:
        assert _run("--base-url", srv3.base_url, "--concurrency", "1", *args) == 0
        assert srv3.requests_received == 0  # fully cached
    assert _report(out)["results"] == first["results"]
    # another model behind the same URL is another cache entry (identity, not URL, keys the cache)
    with OpenAICompatServer(ToyQABackend(items, seed=9), model_name="other-model") as srv4:
        assert _run("--base-url", srv4.base_url, *args) == 0
        assert srv4.requests_received >= len(items)
        assert _report(out)["model"] == "other-model"


def test_connection_resets_and_5xx_are_retried(items: list[QAItem], qa_csv: Path, tmp_path: Path) -> None:
    faults = {3: "reset", 4: "500", 9: "reset", 20: "500", 21: "reset"}
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served", fault=faults.get) as srv:
        out = tmp_path / "ri"
        assert _run("--base-url", srv.base_url, "--data", str(qa_csv), "--out", str(out), "--concurrency", "3",
                    "--retries", "3", "--backoff", "0.01") == 0
    with OpenAICompatServer(ToyQABackend(items), model_name="toy-served") as clean:
        assert _run("--base-url", clean.base_url, "--data", str(qa_csv), "--out", str(tmp_path / "clean")) == 0
    assert _report(out)["results"] == _report(tmp_path / "clean")["results"]
    assert srv.requests_served == clean.requests_served


class RuleJudge(Backend):
    """A judge that reads the judge prompt and grades with the rule grader on the whole response, except
    that it calls every year (four digits) 'not attempted' and replies garbage to responses starting with 'B'."""

    name = "rule-judge"

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        out = []
        for r in requests:
            lines = r.messages[-1]["content"].splitlines()
            gold = next(x for x in lines if x.startswith("Gold answer")).split(": ", 1)[1].split(" | ")
            resp = next(x for x in lines if x.startswith("Model response: "))[len("Model response: "):]
            if resp.startswith("B"):
                out.append(Completion("maybe?"))
                continue
            g = "refused" if resp.strip().isdigit() and len(resp.strip()) == 4 else grade_answer(resp, gold)
            out.append(Completion({"correct": "A", "incorrect": "B", "refused": "C"}[g]))
        return out


def test_judge_grader_is_selectable_and_agreement_is_reported(
        server: OpenAICompatServer, qa_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ri"
    with OpenAICompatServer(RuleJudge()) as judge:
        assert _run("--base-url", server.base_url, "--data", str(qa_csv), "--out", str(out), "--grader", "judge",
                    "--judge-base-url", judge.base_url) == 0
        asked = judge.requests_received
        assert _run("--base-url", server.base_url, "--data", str(qa_csv), "--out", str(out), "--grader", "judge",
                    "--judge-base-url", judge.base_url) == 0
        assert judge.requests_received == asked  # judge replies are cached too
    rep = _report(out)
    s = _samples(out)
    assert rep["grader"] == "judge" and rep["judge"]["model"] == "judge:rule-judge"
    both = [x for x in s if x["grade"] is not None]
    agree = sum(x["grade"] == x["rule_grade"] for x in both) / len(both)
    assert rep["judge"]["agreement"] == pytest.approx(agree)
    assert 0.5 < agree < 1.0  # the judge disagrees on years
    assert rep["judge"]["n_judge_unparsed"] == sum(x["grade"] is None for x in s) > 0
    r = rep["results"]["standard"]
    assert r["n_scored"] < 160 and "rule_grader" in r and r["rule_grader"]["ri"] != r["ri"]
    assert main(["refusal-index", "--base-url", server.base_url, "--data", str(qa_csv), "--out", str(out),
                 "--grader", "judge"]) == 2


def test_sampled_decoding_needs_k_samples_and_reports_the_many_sample_ri(
        items: list[QAItem], qa_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    assert _run("--model", "toy", "--data", str(qa_csv), "--out", str(out), "--temperature", "0.7") == 2
    assert _run("--model", "toy", "--data", str(qa_csv), "--out", str(out), "--temperature", "0.7",
                "--samples", "6") == 0
    r = _report(out)["results"]["standard"]
    ms = r["many_sample"]
    assert ms["samples_per_question"] == 6 and ms["ri_ci_low"] <= ms["ri"] <= ms["ri_ci_high"]
    assert len([x for x in _samples(out) if x["pass"] == 2]) == 6 * len(items)  # forced on every question
    assert np.isfinite(r["ri"]) and ms["ri"] != r["ri"]


@pytest.mark.parametrize("args,msg", [
    (["--model", "toy", "--base-url", "http://x/v1", "--data", "embedded"], "exactly one of --model"),
    (["--model", "toy"], "--data is missing"),
    (["--model", "toy", "--data", "embedded", "--prompts", "bold"], "unknown pass-1 prompt"),
    (["--model", "toy", "--data", "nope.csv"], "does not exist"),
    (["--base-url", "http://127.0.0.1:9/v1", "--data", "embedded", "--timeout", "0.5"], "--model-name"),
    (["--model", "toy", "--data", "embedded", "--samples", "3"], "needs --temperature"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], msg: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["refusal-index", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and err.count("\n") == 0


def test_unknown_served_model_name_is_refused(server: OpenAICompatServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--base-url", server.base_url, "--model-name", "gpt-9", "--data", "embedded",
                "--out", str(tmp_path / "o")) == 2
    assert "toy-served" in capsys.readouterr().err


EXAMPLES = Path(__file__).resolve().parents[2] / "src/trustlab/systems/refusal_index/examples"
PASS1 = EXAMPLES / "samples_factqa_refusal_2026-01-01T00-00-00.jsonl"
PASS2 = EXAMPLES / "samples_factqa_forced_2026-01-01T00-00-00.jsonl"


def test_from_harness_samples_equals_the_counts_of_the_two_files(tmp_path: Path) -> None:
    from trustlab.metrics.refusal import refusal_index_from_counts

    out = tmp_path / "h"
    assert _run("--from-samples", str(PASS1), str(PASS2), "--out", str(out)) == 0
    r = _report(out)["results"]["pass1"]
    p1 = [json.loads(x) for x in PASS1.read_text().splitlines()]
    p2 = {json.loads(x)["doc_id"]: json.loads(x) for x in PASS2.read_text().splitlines()}
    refused = [d["filtered_resps"][0] == "I don't know." for d in p1]  # the toy's refusal text
    correct1 = [d["exact_match"] == 1.0 for d in p1]
    wrong = [p2[d["doc_id"]]["exact_match"] == 0.0 if rf else not c for d, rf, c in zip(p1, refused, correct1, strict=True)]
    n11 = sum(a and b for a, b in zip(refused, wrong, strict=True))
    n10 = sum(a and not b for a, b in zip(refused, wrong, strict=True))
    n01 = sum(not a and b for a, b in zip(refused, wrong, strict=True))
    n00 = sum(not a and not b for a, b in zip(refused, wrong, strict=True))
    assert r["counts_n11_n10_n01_n00"] == [n11, n10, n01, n00]
    assert r["ri"] == pytest.approx(refusal_index_from_counts(n11, n10, n01, n00, n_boot=0).ri)
    # the harness's own metric gives the same grades here (exact-match answers)
    out2 = tmp_path / "m"
    assert _run("--from-samples", str(PASS1), str(PASS2), "--out", str(out2), "--correct-metric", "exact_match") == 0
    assert _report(out2)["results"]["pass1"]["counts_n11_n10_n01_n00"] == r["counts_n11_n10_n01_n00"]


def test_from_samples_bad_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    assert _run("--from-samples", str(bad), str(PASS2), "--out", str(tmp_path / "o")) == 2
    assert "not an lm-evaluation-harness sample" in capsys.readouterr().err
    first = tmp_path / "p2.jsonl"
    first.write_text(PASS2.read_text().splitlines()[0] + "\n")  # forced answers missing for most refusals
    assert _run("--from-samples", str(PASS1), str(first), "--out", str(tmp_path / "o")) == 2
    assert "have no forced answer" in capsys.readouterr().err
    assert _run("--from-samples", str(PASS1), str(PASS2), "--out", str(tmp_path / "o"), "--harness-filter", "x") == 2


def test_local_hf_model_by_path(tmp_path: Path) -> None:
    from trustlab.llm.tiny import tiny_chat_model

    model, tok = tiny_chat_model(seed=0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "ri"
    assert _run("--model", str(tmp_path / "m"), "--data", "embedded", "--limit", "6", "--max-tokens", "3",
                "--out", str(out)) == 0
    rep = _report(out)
    assert rep["model"] == str((tmp_path / "m").resolve()) and rep["n_questions"] == 6
    r = rep["results"]["standard"]
    # a random tiny LM refuses nothing: RI is undefined, with the reason, never a number
    assert r["ri_undefined_reason"] and r["refusal_rate"] == 0.0 and "ece_conf" in r


def test_declared_demo_verbs_run(tmp_path: Path) -> None:
    import shlex

    from trustlab.systems.refusal_index import SYSTEM

    assert SYSTEM.key_figure == "ri_vs_refusal_rate.png" and len(SYSTEM.demo) == 2
    for i, cmd in enumerate(SYSTEM.demo):
        out = tmp_path / f"d{i}"
        assert main(shlex.split(cmd.replace("{out}", str(out)))) == 0
        assert np.isfinite(_report(out)["results"]["standard"]["ri"])


class NoLogprobToy(ToyQABackend):
    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        return [Completion(c.text) for c in super().generate(requests)]


def test_no_logprobs_means_no_calibration_metrics(items: list[QAItem], qa_csv: Path, tmp_path: Path) -> None:
    with OpenAICompatServer(NoLogprobToy(items), model_name="plain") as srv:
        assert _run("--base-url", srv.base_url, "--data", str(qa_csv), "--out", str(tmp_path / "o")) == 0
    r = _report(tmp_path / "o")["results"]["standard"]
    assert r["logprobs"] is False and "ece_conf" not in r and "auroc_conf" not in r and np.isfinite(r["ri"])


def test_server_rejecting_logprobs_falls_back_without_them(items: list[QAItem], qa_csv: Path, tmp_path: Path) -> None:
    with OpenAICompatServer(ToyQABackend(items), model_name="strict", fault=lambda n: "reject-logprobs") as srv:
        assert _run("--base-url", srv.base_url, "--data", str(qa_csv), "--out", str(tmp_path / "o"),
                    "--concurrency", "1", "--retries", "0") == 0
    r = _report(tmp_path / "o")["results"]["standard"]
    assert r["logprobs"] is False and np.isfinite(r["ri"])
