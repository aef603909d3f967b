import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustlab.errors import UserError
from trustlab.registry import SYSTEMS
from trustlab.reporting.record import summarize
from trustlab.runner import run_system

from . import toy_system

CHECK = Path(__file__).resolve().parents[3] / "shared" / "tools" / "check_results.py"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SYSTEMS._targets, "toy", "core.toy_system:SYSTEM")
    toy_system.CALLS.clear()
    yield "toy"
    SYSTEMS._cache.pop("toy", None)


def test_run_writes_schema(toy, tmp_path):
    rec, out = run_system("toy", "smoke", out=tmp_path / "r", seeds=[0, 1])
    res = json.loads((out / "results.json").read_text())
    for k in ["schema", "system", "scale", "config", "seeds", "env", "git", "wall_time_s", "rows", "summary", "claims"]:
        assert k in res
    assert res["schema"] == 1 and res["system"] == "toy" and res["scale"] == "smoke" and res["seeds"] == [0, 1]
    assert res["config"]["n"] == 2 and res["env"]["torch"]
    assert len(res["rows"]) == 4 and all({"setting", "method", "seed"} <= set(r) for r in res["rows"])
    ours = next(s for s in res["summary"] if s["method"] == "ours")
    assert ours["n"] == 2 and ours["acc_mean"] == pytest.approx(0.6) and ours["acc_std"] == 0.0
    assert res["claims"] == [{"id": "C1", "text": "ours beats base", "holds": True,
                              "figures": {"ours": pytest.approx(0.6), "base": pytest.approx(0.5)}}]
    for f in ["metrics.csv", "series.csv", "config.yaml", "report.md", "plots/summary.png", "plots/series_loss.png"]:
        assert (out / f).is_file(), f
    assert "ours" in (out / "metrics.csv").read_text().splitlines()[1] or "ours" in (out / "metrics.csv").read_text()
    assert "| default | ours | 2 |" in (out / "report.md").read_text()


def test_seeded_units_are_reproducible(toy, tmp_path):
    r1, _ = run_system("toy", "smoke", out=tmp_path / "a", seeds=[5])
    r2, _ = run_system("toy", "smoke", out=tmp_path / "b", seeds=[5])
    assert [r["noise"] for r in r1.rows] == [r["noise"] for r in r2.rows]


def test_resume_after_kill(toy, tmp_path, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setenv("TOY_CRASH_AT", "base/1")
    with pytest.raises(KeyboardInterrupt):
        run_system("toy", "smoke", out=out, seeds=[0, 1])
    assert toy_system.CALLS == ["ours/0", "base/0", "ours/1", "base/1"]
    assert not (out / "results.json").exists()
    monkeypatch.delenv("TOY_CRASH_AT")
    toy_system.CALLS.clear()
    rec, _ = run_system("toy", "smoke", out=out, seeds=[0, 1])
    assert toy_system.CALLS == ["base/1"]  # the three finished units were not recomputed
    assert len(rec.rows) == 4 and any("resumed: 3" in n for n in rec.notes)


def test_out_with_other_config_is_refused_and_untouched(toy, tmp_path):
    out = tmp_path / "r"
    run_system("toy", "smoke", out=out, seeds=[0])
    before = (out / "results.json").read_bytes()
    with pytest.raises(UserError, match="different config"):
        run_system("toy", "smoke", out=out, overrides=["n=9"], seeds=[0])
    assert (out / "results.json").read_bytes() == before


def test_unwritable_out(toy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write to output folder"):
        run_system("toy", "smoke", out=blocker / "sub")


def test_summarize_sample_std():
    rows = [{"setting": "s", "method": "m", "seed": i, "x": v} for i, v in enumerate([1.0, 2.0, 3.0])]
    (s,) = summarize(rows)
    assert s["x_mean"] == 2.0 and s["x_std"] == pytest.approx(1.0) and s["n"] == 3


@pytest.mark.skipif(not CHECK.is_file(), reason="shared/tools/check_results.py not beside the repo")
def test_schema_checker_accepts_core_fields(toy, tmp_path):
    _, out = run_system("toy", "smoke", out=tmp_path / "r", seeds=[0])
    p = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)
    # 'toy' is not one of the ten systems, so only that line may be reported.
    problems = [ln for ln in p.stdout.splitlines() if "PROBLEM" in ln]
    assert problems and all("unknown system 'toy'" in ln for ln in problems), p.stdout
