"""RI from two lm-evaluation-harness ``--log_samples`` files (``trustlab refusal-index --from-samples``).

The harness writes one JSON object per (document, filter) to ``samples_<task>_<date>.jsonl``:
``doc_id``, ``doc`` (the dataset row), ``target`` (gold answer: a string, or a list), ``resps``
(raw generations), ``filtered_resps`` (after the task's filters; for ``generate_until`` tasks a
list holding the answer string), ``filter``, ``metrics`` (names) and one field per metric
(e.g. ``"exact_match": 1.0``), plus ``doc_hash``/``prompt_hash``/``target_hash``.

PASS1 is a run of a refusal-permitting task, PASS2 a run of the same documents with a forced-answer
prompt (it may hold every document or only the refused ones). Documents are joined on ``doc_id``
(checked against ``doc_hash`` where both files have it). Each answer is graded with the rule grader
against ``target`` (plus the ``doc``'s ``answers``/``aliases`` lists when present); with
``correct_metric`` the harness's own metric decides correctness and the rule grader only detects
refusals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import UserError
from trustlab.llm.grading import Grade, grade_answer, is_refusal
from trustlab.systems.refusal_index.baselines import baseline_metrics
from trustlab.systems.refusal_index.method import TwoPassRefusalIndex
from trustlab.systems.refusal_index.tool import GRADES_SIMPLEQA, _estimate_dict
from trustlab.utils.io import atomic_write_json, atomic_write_text


def _response(row: dict[str, Any]) -> str:
    fr = row.get("filtered_resps", row.get("resps"))
    while isinstance(fr, list):
        if not fr:
            return ""
        fr = fr[0]
    return "" if fr is None else str(fr)


def _golds(row: dict[str, Any]) -> list[str]:
    t = row.get("target")
    golds = [str(x) for x in t] if isinstance(t, list) else ([] if t is None else [str(t)])
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
    for key in ("answers", "aliases", "answer_aliases"):
        v = doc.get(key)
        if isinstance(v, list):
            golds += [str(x) for x in v]
    return [g for g in dict.fromkeys(golds) if g.strip()]


def _question(row: dict[str, Any]) -> str:
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
    for key in ("question", "problem", "query", "input"):
        if isinstance(doc.get(key), str):
            return doc[key]
    return f"doc {row.get('doc_id')}"


def load_harness_samples(path: Path, filter_name: str | None = None) -> dict[Any, dict[str, Any]]:
    """``doc_id -> row`` of one ``--log_samples`` file, for one filter (default: the first one seen).

    Raises:
        UserError: missing file, a line that is not a harness sample, an unknown filter, a repeated doc.
    """
    if not path.is_file():
        raise UserError(f"harness samples file {str(path)!r} does not exist",
                        "pass the samples_<task>_<date>.jsonl files lm_eval --log_samples wrote")
    rows: dict[Any, dict[str, Any]] = {}
    filters: list[str] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = row["doc_id"]
            _ = row["filtered_resps"] if "filtered_resps" in row else row["resps"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{str(path)!r} line {i} is not an lm-evaluation-harness sample ({exc})",
                            "each line needs doc_id and filtered_resps (lm_eval --log_samples output)") from exc
        flt = str(row.get("filter", "none"))
        if flt not in filters:
            filters.append(flt)
        if flt != (filter_name or filters[0]):
            continue
        if doc_id in rows:
            raise UserError(f"{str(path)!r} repeats doc_id {doc_id!r} under filter {flt!r}",
                            "pass one task's samples file per pass")
        rows[doc_id] = row
    if filter_name and filter_name not in filters:
        raise UserError(f"{str(path)!r} has no filter {filter_name!r}", f"use one of: {', '.join(filters)}")
    if not rows:
        raise UserError(f"{str(path)!r} holds no samples", "pass a non-empty --log_samples file")
    return rows


def _grade(row: dict[str, Any], correct_metric: str | None) -> Grade:
    text = _response(row)
    if correct_metric is not None:
        if correct_metric not in row:
            raise UserError(f"harness sample doc_id {row.get('doc_id')!r} has no metric {correct_metric!r}",
                            f"use one of its metrics: {', '.join(map(str, row.get('metrics') or [])) or 'none'}")
        if float(row[correct_metric]) > 0:
            return "correct"
        return "refused" if is_refusal(text) else "incorrect"
    golds = _golds(row)
    if not golds:
        raise UserError(f"harness sample doc_id {row.get('doc_id')!r} has no target to grade against",
                        "pass --correct-metric exact_match (say) to use the harness's own scoring")
    return grade_answer(text, golds)


def from_harness_samples(pass1: Path, pass2: Path, out: Path, filter_name: str | None = None,
                         correct_metric: str | None = None, n_boot: int = 1000, ci: float = 0.95,
                         seed: int = 0) -> dict[str, Any]:
    """Two-pass RI from two harness sample files; writes ``report.json`` and ``samples.jsonl`` into ``out``."""
    r1 = load_harness_samples(Path(pass1), filter_name)
    r2 = load_harness_samples(Path(pass2), filter_name)
    ids = sorted(r1, key=lambda d: (str(type(d)), d))
    g1 = [_grade(r1[d], correct_metric) for d in ids]
    refused = np.array([g == "refused" for g in g1])
    missing = [d for d, r in zip(ids, refused, strict=True) if r and d not in r2]
    if missing:
        raise UserError(f"{len(missing)} document(s) refused in PASS1 have no forced answer in PASS2 "
                        f"(first doc_id {missing[0]!r})", "run the forced-answer task on (at least) those documents")
    for d in ids:
        h1, h2 = r1[d].get("doc_hash"), (r2.get(d) or {}).get("doc_hash")
        if h1 and h2 and h1 != h2:
            raise UserError(f"doc_id {d!r} is a different document in the two files (doc_hash differs)",
                            "pass two runs over the same dataset split")
    g2 = {d: _grade(r2[d], correct_metric) for d, r in zip(ids, refused, strict=True) if r}
    wrong1 = np.array([g == "incorrect" for g in g1])
    correct1 = np.array([g == "correct" for g in g1])
    wrong2 = np.array([g2.get(d, "correct") != "correct" for d in ids])
    est = TwoPassRefusalIndex(n_boot, ci).fit(refused, wrong1, wrong2, seed=seed)
    res = {"n_scored": len(ids), **_estimate_dict(est), **baseline_metrics(refused, correct1), "logprobs": False}
    samples = []
    for d, g in zip(ids, g1, strict=True):
        samples.append({"question_id": d, "question": _question(r1[d]), "gold": _golds(r1[d]), "pass": 1,
                        "prompt": str(pass1), "sample": 0, "answer": _response(r1[d]), "grade": GRADES_SIMPLEQA[g]})
        if d in g2:
            samples.append({"question_id": d, "question": _question(r2[d]), "gold": _golds(r2[d]), "pass": 2,
                            "prompt": str(pass2), "sample": 0, "answer": _response(r2[d]),
                            "grade": GRADES_SIMPLEQA[g2[d]]})
    report = {"model": "from lm-evaluation-harness samples", "pass1_file": str(pass1), "pass2_file": str(pass2),
              "filter": filter_name, "correct_metric": correct_metric, "n_questions": len(ids),
              "grader": f"harness metric {correct_metric}" if correct_metric else "rule",
              "ci_level": ci, "n_boot": n_boot, "results": {"pass1": res}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    atomic_write_json(out / "report.json", report)
    return report
