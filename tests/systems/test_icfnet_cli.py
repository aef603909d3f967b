"""``trustlab survival fit|predict`` on small CSVs written here: outputs, reload, missing modalities, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trustlab.cli import main
from trustlab.data.survival import make_synthetic_multimodal
from trustlab.systems.icfnet.cli import fold_interval
from trustlab.systems.icfnet.method import ICFNet

FAST = ["--epochs", "2", "--d", "4", "--layers", "1", "--folds", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    d = make_synthetic_multimodal(n=40, seed=3, patches=(5, 30), patch_dim=4, gene_groups=3, genes_per_group=2)
    cx = d.modalities["clinical"].x
    clin = pd.DataFrame({"pid": d.ids, "months": d.time, "dead": d.event.astype(int), "age": cx[:, 0],
                         "sex": np.where(cx[:, 1] > 0, "F", "M"), "treat": cx[:, 2]})
    clin.loc[3, "age"] = np.nan  # one unknown value: imputed
    clin.to_csv(root / "clin.csv", index=False)
    gen = pd.DataFrame(d.modalities["genomics"].x, columns=[f"G{i}" for i in range(6)])
    gen.insert(0, "pid", d.ids)
    gen.iloc[4:].to_csv(root / "gen.csv", index=False)  # patients 0-3 have no genomics
    (root / "feats").mkdir()
    bag = d.modalities["pathology"]
    for i in range(6, 40):  # patients 0-5 have no slide
        np.save(root / "feats" / f"{d.ids[i]}.npy", bag.x[i, bag.mask[i]])
    clin.drop(columns=["months", "dead"]).iloc[2:10].to_csv(root / "new.csv", index=False)
    clin.assign(dead=0).to_csv(root / "no_events.csv", index=False)
    return root


def test_fit_then_predict(files, capsys) -> None:
    out = files / "model"
    rc = main(["survival", "fit", "--clinical", str(files / "clin.csv"), "--genomics", str(files / "gen.csv"),
               "--patches", str(files / "feats"), "--time", "months", "--event", "dead", "--id", "pid",
               "--max-patches", "12", "--out", str(out), *FAST])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cross-validated C-index (2 folds)" in printed and "--max-patches 12" in printed
    report = json.loads((out / "fit_report.json").read_text())
    assert report["patients"] == 40 and report["modalities"]["genomics"]["patients"] == 36
    assert report["modalities"]["pathology"]["patients"] == 34
    assert report["modalities"]["pathology"]["max_patches"] == 12 and report["modalities"]["pathology"]["truncated_bags"] > 0
    cv = report["cross_validation"]
    assert len(cv["fold_c_index"]) == 2 and cv["ci95"][0] <= cv["c_index"] <= cv["ci95"][1]
    pred = files / "pred.csv"
    assert main(["survival", "predict", "--model", str(out), "--clinical", str(files / "new.csv"),
                 "--genomics", str(files / "gen.csv"), "--patches", str(files / "feats"), "--out", str(pred)]) == 0
    table = pd.read_csv(pred)
    model = ICFNet.load(out)
    assert list(table.columns) == ["pid", "risk"] + [f"S(t={t:.6g})" for t in model.unique_times_]
    assert len(table) == 8 and table["pid"].tolist() == [f"P{i:04d}" for i in range(2, 10)]
    s = table.iloc[:, 2:].to_numpy()
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s, axis=1) <= 1e-7)
    # patients 2-3 lack genomics, 2-5 lack a slide: predictions from what they have
    assert np.isfinite(table["risk"]).all()
    # predict without --patches: every patient lacks a slide; those who had none keep their prediction
    pred2 = files / "pred2.csv"
    assert main(["survival", "predict", "--model", str(out), "--clinical", str(files / "new.csv"),
                 "--genomics", str(files / "gen.csv"), "--out", str(pred2)]) == 0
    risk2 = pd.read_csv(pred2)["risk"].to_numpy()
    np.testing.assert_allclose(risk2[:4], table["risk"].to_numpy()[:4], rtol=1e-5)
    assert not np.allclose(risk2[4:], table["risk"].to_numpy()[4:])


@pytest.mark.parametrize("args, message", [
    (["--time", "survival_months"], "no column 'survival_months'"),
    (["--clinical", "nope.csv"], "does not exist"),
    (["--clinical", "no_events.csv"], "has an event"),
    (["--patches", "missing_dir"], "does not exist"),
    (["--folds", "1"], "not a number of folds"),
])
def test_fit_bad_input_one_line_exit_2(files, capsys, args, message) -> None:
    base = {"--clinical": "clin.csv", "--time": "months", "--event": "dead", "--id": "pid"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    argv = ["survival", "fit", "--out", str(files / "bad")]
    for k, v in base.items():
        argv += [k, v if k in ("--time", "--event", "--id", "--folds") else str(files / v)]
    assert main(argv + ["--epochs", "1", "--d", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1] and "Traceback" not in "".join(err)


def test_predict_bad_input_and_help(files, capsys) -> None:
    assert main(["survival", "predict", "--model", str(files), "--clinical", str(files / "new.csv"),
                 "--out", str(files / "p.csv")]) == 2
    assert "holds no cohort.json" in capsys.readouterr().err
    assert main(["survival", "--help"]) == 0
    assert "fit" in capsys.readouterr().out
    assert main(["survival", "fit", "--help"]) == 0


def test_fold_interval() -> None:
    mean, lo, hi = fold_interval([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7) and lo < 0.7 < hi
    assert hi - mean == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)  # t_{2, 0.975} * sd / sqrt(k)
