"""The newcomer's surface: quick scale, `trustlab config`, --model mapping, report to a file, env, plots, demo."""

from __future__ import annotations

import json

import pytest

from trustlab.cli import main
from trustlab.config import attribute_docs, describe_config, load_config
from trustlab.errors import UserError
from trustlab.registry import SYSTEMS, available_systems

from . import toy_system


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SYSTEMS._targets, "toy", "core.toy_system:SYSTEM")
    yield
    SYSTEMS._cache.pop("toy", None)


def test_quick_scale_falls_back_to_smoke_with_one_seed():
    cfg = toy_system.ToyConfig.for_scale("quick")
    assert cfg.n == 2 and cfg.inner.steps == 1 and cfg.seeds == [0]
    assert toy_system.ToyConfig.for_scale("default").seeds == [0, 1, 2]


@pytest.mark.parametrize("name", available_systems())
def test_every_system_has_a_valid_quick_scale_and_documented_settings(name):
    cls = SYSTEMS.get(name).config_cls()
    cfg = cls.for_scale("quick")
    cfg.validate()
    assert len(cfg.seeds) == 1
    rows = describe_config(cfg)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) and "seeds" in keys
    undocumented = [r["key"] for r in rows if not r["doc"]]
    assert not undocumented, f"{name}: settings without a doc line in the config's Attributes: {undocumented}"


def test_attribute_docs_reads_google_style_sections():
    class C:
        """Title.

        Attributes:
            a: First line
                continues here.
            b: Second.

        Notes:
            c: not an attribute.
        """

    assert attribute_docs(C) == {"a": "First line continues here.", "b": "Second."}


def test_config_command_lists_every_key_with_type_value_doc(toy, capsys):
    assert main(["config", "toy", "--scale", "smoke", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["inner.steps"]["value"] == "1" and rows["inner.steps"]["type"] == "int"
    assert rows["seeds"]["doc"].startswith("Seeds to run")
    assert main(["config", "nosuch"]) == 2


def test_unknown_nested_key_lists_the_closest_dotted_keys(toy):
    with pytest.raises(UserError, match=r"did you mean 'inner.steps'.*trustlab config"):
        load_config(toy_system.ToyConfig, overrides=["steps=2"])


def test_model_option_maps_or_refuses(capsys):
    from trustlab.cli import model_key

    assert model_key("impq") == "model"
    assert main(["run", "nadafd", "--model", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no single model setting" in err and "trustlab fed" in err


def test_report_writes_a_file_and_prints_its_summary_not_the_whole_report(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "toy", "--scale", "quick", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Contents" in text and "## Summary" in text and "claims 1/1 hold" in text
    assert f"report: {tmp_path / 'rep' / 'report.md'}" in printed
    assert "## Contents" not in printed and "toy" in printed


def test_env_lists_extras_and_data_packages(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["extras"]) >= {"fed", "llm", "survival", "dev"}
    assert "fashion-mnist" in info["data_packages"]
    assert all("installed" in d for d in info["data_packages"].values())


def test_summary_plot_leaves_interval_bounds_out_and_puts_headlines_first(tmp_path):
    from trustlab.reporting.plots import plot_summary, summary_metrics

    summary = [{"setting": s, "method": m, "n": 2, "ri_mean": 0.5, "ri_std": 0.1, "ri_ci_low_mean": 0.3,
                "ri_ci_low_std": 0.0, "ri_ci_high_mean": 0.7, "ri_ci_high_std": 0.0, "acc_mean": 0.8,
                "acc_std": 0.01, "seconds_mean": 3.0, "seconds_std": 0.1}
               for s in ("a", "b") for m in ("x", "y")]
    assert summary_metrics(summary, ["acc"]) == ["acc", "ri"]
    assert plot_summary(summary, tmp_path / "s.png", title="t") == [tmp_path / "s.png"]
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_series_plot_names_its_x_axis_and_draws_a_band_over_seeds(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from trustlab.reporting.plots import plot_series

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), real(self, *a, **k))[1])
    series = [{"setting": "s", "method": "m", "seed": seed, "step": t, "loss": 1.0 / (t + 1) + seed}
              for seed in (0, 1) for t in range(3)]
    assert plot_series(series, tmp_path, title="t", x_label="round") == [tmp_path / "series_loss.png"]
    ax = figs[0].axes[0]
    assert ax.get_xlabel() == "round" and ax.get_ylabel() == "loss"
    assert ax.collections, "no band over seeds was drawn"


def test_demo_runs_quick_scale_then_the_verbs_and_writes_a_report(toy, tmp_path, monkeypatch, capsys):
    import dataclasses

    spec = SYSTEMS.get("toy")
    monkeypatch.setitem(SYSTEMS._cache, "toy", dataclasses.replace(spec, demo=("config toy --json",)))
    assert main(["demo", "--only", "toy", "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    text = (tmp_path / "d" / "report.md").read_text()
    assert "trustlab demo (quick scale)" in text and "tool verb `trustlab config toy --json`: ok" in text
    # idempotent: a second demo resumes the same folder
    assert main(["demo", "--only", "toy", "--out", str(tmp_path / "d"), "--no-progress"]) == 0


def test_reproduce_check_compares_with_the_committed_results(toy, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "toy", "--scale", "quick", "--out", "runs", "--no-progress"]) == 0
    (tmp_path / "results" / "toy").mkdir(parents=True)
    shutil.copy(tmp_path / "runs" / "toy" / "results.json", tmp_path / "results" / "toy" / "results.json")
    capsys.readouterr()
    assert main(["reproduce", "toy", "--scale", "quick", "--out", "runs2", "--check", "--no-progress"]) == 0
    assert "0 beyond tolerance" in capsys.readouterr().out
    from trustlab.reporting.compare import compare_results
    from trustlab.utils.io import read_json

    ref = read_json(tmp_path / "results" / "toy" / "results.json")
    new = read_json(tmp_path / "runs2" / "toy" / "results.json")
    new["rows"][0]["acc"] += 1e-3
    cmp = compare_results(new, ref)
    assert len(cmp["beyond_tol"]) == 1 and cmp["max_abs_diff"] == pytest.approx(1e-3)


def test_reproduce_check_ignores_clock_figures():
    from trustlab.reporting.compare import compare_results, is_timing

    row = {"setting": "s", "method": "m", "seed": 0, "acc": 0.5, "cost_ratio": 0.1, "epoch_time_s": 3.0}
    new = {"rows": [dict(row, cost_ratio=0.2, epoch_time_s=4.0)]}
    cmp = compare_results(new, {"rows": [row]})
    assert cmp["beyond_tol"] == [] and cmp["compared"] == 1  # acc compared, the two clock figures not
    assert is_timing("latency_s") and is_timing("uadat_epoch_time_ratio") and is_timing("cpu_per_image_s")
    assert not is_timing("acc")


def test_runs_pin_the_thread_count(monkeypatch):
    import torch

    from trustlab.runner import REFERENCE_THREADS, pin_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("TRUSTLAB_THREADS", raising=False)
        assert pin_threads() == REFERENCE_THREADS == torch.get_num_threads()
        monkeypatch.setenv("TRUSTLAB_THREADS", "1")
        assert pin_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("TRUSTLAB_THREADS", "zero")
        with pytest.raises(UserError, match="TRUSTLAB_THREADS"):
            pin_threads()
    finally:
        torch.set_num_threads(before)


def test_reports_skip_a_tool_verbs_own_results_json_below_a_run(toy, tmp_path):
    from trustlab.reporting.merge import find_results, merge_report

    out = tmp_path / "run"
    assert main(["run", "toy", "--scale", "quick", "--out", str(out), "--no-progress"]) == 0
    (out / "verb-0").mkdir()
    (out / "verb-0" / "results.json").write_text('{"model": "x"}')  # a verb's report, not a run record
    assert find_results([tmp_path]) == [out / "results.json"]
    assert merge_report([tmp_path], tmp_path / "rep").is_file()
