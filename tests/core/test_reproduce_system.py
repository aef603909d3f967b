"""One real system end to end: a fresh quick-scale run reproduces the committed results file within 1e-6.

``results/refusal-index/quick/results.json`` was written by ``trustlab run refusal-index --scale quick``
(2 threads, the reference pin). The quick scale is the Refusal Index simulation (no model training), so
the figures are deterministic across machines up to float rounding, far inside the tolerance.
"""

from __future__ import annotations

from pathlib import Path

from trustlab.cli import main
from trustlab.reporting.compare import compare_results
from trustlab.utils.io import read_json

ROOT = Path(__file__).resolve().parents[2]


def test_refusal_index_quick_reproduces_the_committed_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TRUSTLAB_THREADS", raising=False)
    ref = read_json(ROOT / "results" / "refusal-index" / "quick" / "results.json")
    assert main(["run", "refusal-index", "--scale", "quick", "--out", str(tmp_path / "ri"), "--no-progress"]) == 0
    new = read_json(tmp_path / "ri" / "results.json")
    assert new["config"] == ref["config"]  # same settings: a failure below is a reproduction failure
    cmp = compare_results(new, ref, tol=1e-6)
    assert cmp["only_new"] == [] and cmp["only_ref"] == []
    assert cmp["compared"] >= 50 and cmp["beyond_tol"] == [], cmp["beyond_tol"][:5]
