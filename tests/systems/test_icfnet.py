"""ICFNet: losses, OT, survival outputs, data loaders and the smoke-scale run."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from trustlab.data.survival import (
    load_patch_bags,
    load_survival_csv,
    load_survival_dataset,
    make_synthetic_multimodal,
)
from trustlab.errors import UserError
from trustlab.metrics.survival import harrell_c_index
from trustlab.systems.icfnet.baselines import DeepSurv, LateFusion, breslow_baseline
from trustlab.systems.icfnet.devsearch import (
    EXTERNAL,
    external_breast_cohort,
    module_score,
    semi_bio_breast_cancer,
    semi_synthetic_breast_cancer,
)
from trustlab.systems.icfnet.losses import (
    balanced_nll_loss,
    cox_ph_loss,
    discretize,
    fit_time_bins,
    nll_loss,
    orthogonality_loss,
    sinkhorn_unbalanced,
)
from trustlab.systems.icfnet.method import ICFNet, ICFNetModule

K = 4


def _manual_nll(h: np.ndarray, y: int, c: int, balanced: bool) -> float:
    """Likelihood written out factor by factor (independent of the vectorised code)."""
    factors = []
    if c == 0:
        factors += [1 - h[j] for j in range(y)] + [h[y]]
        if balanced:
            factors += [1 - h[y - 1] if y > 0 else 1.0] * (K - 1 - y)
    else:
        factors += [1 - h[j] for j in range(y + 1)]
        if balanced:
            factors += [1 - h[y]] * (K - 1 - y)
    return -sum(math.log(max(f, 1e-7)) for f in factors)


def test_nll_and_balanced_nll_match_written_out_likelihood() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * K, K, generator=g)
    y = torch.tensor(list(range(K)) * 2)
    c = torch.tensor([0] * K + [1] * K)
    h = torch.sigmoid(logits).numpy()
    for balanced, fn in [(False, nll_loss), (True, balanced_nll_loss)]:
        ref = np.mean([_manual_nll(h[i], int(y[i]), int(c[i]), balanced) for i in range(2 * K)])
        assert float(fn(logits, y, c)) == pytest.approx(ref, rel=1e-5)
    # beta = 0 -> plain NLL; no padding for uncensored y in {0, K-1} and censored y = K-1
    assert float(balanced_nll_loss(logits, y, c, beta=0.0)) == pytest.approx(float(nll_loss(logits, y, c)), rel=1e-6)
    for i in (0, K - 1, 2 * K - 1):
        sl = slice(i, i + 1)
        assert float(balanced_nll_loss(logits[sl], y[sl], c[sl])) == pytest.approx(float(nll_loss(logits[sl], y[sl], c[sl])))


def test_cox_loss_matches_hand_computation() -> None:
    risk = torch.tensor([0.5, -0.2, 1.0, 0.0])
    time = torch.tensor([3.0, 1.0, 2.0, 4.0])
    event = torch.tensor([1, 1, 0, 1])
    r = risk.numpy()
    ref = -np.mean([r[1] - np.log(np.exp(r).sum()), r[0] - np.log(np.exp(r[[0, 3]]).sum()), r[3] - r[3]])
    assert float(cox_ph_loss(risk, time, event)) == pytest.approx(ref, rel=1e-6)


def test_bins_fit_on_events_and_discretize() -> None:
    cuts = fit_time_bins(np.array([1, 2, 3, 4, 5, 100.0]), np.array([1, 1, 1, 1, 1, 0], bool), 4)
    assert cuts.shape == (3,) and np.all(np.diff(cuts) > 0) and cuts.max() < 5
    assert discretize(np.array([0.5, 2.5, 1000]), cuts).tolist() == [0, 1, 3]


def test_converged_sinkhorn_equals_pot() -> None:
    """Our batched Sinkhorn at the official call's settings (POT defaults: 1000 iterations, stopThr
    1e-6) gives POT's plan; POT >= 0.9.4 calls the official (pre-0.9.4) regulariser reg_type="entropy"."""
    import ot  # trustlab[survival]; a hard requirement of this test

    g = torch.Generator().manual_seed(1)
    cost = torch.rand(3, 50, 6, generator=g, dtype=torch.float64)
    a = torch.full((3, 50), 1 / 50, dtype=torch.float64)
    a[2, 40:] = 0.0  # a padded bag: 40 real patches
    a[2, :40] = 1 / 40
    b = torch.full((3, 6), 1 / 6, dtype=torch.float64)
    plan = sinkhorn_unbalanced(cost, a, b, reg=0.1, reg_m=0.5, n_iter=1000, tol=1e-6)
    for i in range(3):
        n = 40 if i == 2 else 50
        with warnings.catch_warnings():  # POT notes that reg_type="entropy" uses c = 1
            warnings.simplefilter("ignore", UserWarning)
            ref = ot.unbalanced.sinkhorn_knopp_unbalanced(a[i, :n].numpy(), b[i].numpy(), cost[i, :n].numpy(), 0.1,
                                                         0.5, reg_type="entropy")
        np.testing.assert_allclose(plan[i, :n].numpy(), ref, rtol=1e-4, atol=1e-7)
        assert np.abs(plan[i, n:].numpy()).max(initial=0.0) == 0.0
    # a fixed small number of iterations (the old default of 5) is measurably away from the converged plan
    early = sinkhorn_unbalanced(cost, a, b, reg=0.1, reg_m=0.5, n_iter=5)
    assert float((early - plan).abs().max()) > 1e-4
    # the balanced limit keeps the source marginal
    plan_b = sinkhorn_unbalanced(cost, a, b, reg=0.1, reg_m=1e4, n_iter=2000)
    np.testing.assert_allclose(plan_b.sum(2).numpy(), a.numpy(), atol=1e-3)


def test_rod_identity_and_orthogonality_range() -> None:
    data = make_synthetic_multimodal(n=40, seed=0, patches=(8, 12), patch_dim=8)
    model = ICFNet(epochs=1, d=8, random_state=0).fit(data)
    net: ICFNetModule = model.net_
    net.eval()
    batch = model.scaler_.to_batch(data)
    captured = {}
    net.fusor.register_forward_hook(lambda m, inp, out: captured.setdefault("r_plus_o", inp[0]))
    out = net(batch)
    with torch.no_grad():
        xb = batch["pathology"]
        patches = net.patch_enc(xb["x"])
        w = xb["mask"].float().unsqueeze(-1)
        r = net.projector((patches * w).sum(1) / w.sum(1))
        o = r - out["vectors"]["p_genomics"] - out["vectors"]["p_clinical"]
    torch.testing.assert_close(captured["r_plus_o"], r + o)
    assert 0.0 <= float(out["orth"].detach()) <= 2.0
    assert float(orthogonality_loss(torch.ones(3, 4), [torch.ones(3, 4)])) == pytest.approx(1.0)


def test_pathology_only_model_sees_mean_and_attention_pooled_bag() -> None:
    data = make_synthetic_multimodal(n=40, seed=0, patches=(8, 12), patch_dim=8)
    model = ICFNet(modalities=["pathology"], epochs=2, d=8, random_state=0).fit(data)
    out = model.net_(model.scaler_.to_batch(data.only(["pathology"])))
    assert set(out["vectors"]) == {"p_mil", "p"}  # attention-MIL stream + the mean-patch (ROD) vector
    # the mean-patch vector depends on the tumour-burden carrier: permuting patches within a bag changes nothing
    batch = model.scaler_.to_batch(data.only(["pathology"]))
    perm = torch.randperm(batch["pathology"]["x"].shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = {"pathology": dict(batch["pathology"], x=batch["pathology"]["x"][:, perm],
                                  mask=batch["pathology"]["mask"][:, perm])}
    torch.testing.assert_close(model.net_(shuffled)["logits"], out["logits"], atol=1e-5, rtol=1e-5)


def test_early_stopping_keeps_best_epoch_and_refits() -> None:
    data = make_synthetic_multimodal(n=80, seed=1, patches=(8, 10), patch_dim=4)
    m = ICFNet(epochs=12, d=8, val_fraction=0.25, patience=2, refit=False, val_metric="cindex").fit(data)
    assert 1 <= m.best_epoch_ <= len(m.val_curve_) <= 12
    assert m.val_curve_[m.best_epoch_ - 1] == pytest.approx(max(m.val_curve_))
    assert len(m.val_curve_) == 12 or len(m.val_curve_) - m.best_epoch_ == 2  # stopped after `patience` epochs
    r = ICFNet(epochs=6, d=8, val_fraction=0.25, patience=2, refit=True).fit(data)
    assert len(r.loss_curve_) == r.best_epoch_  # the refit ran the selected number of epochs on all patients
    with pytest.raises(ValueError):
        ICFNet(val_fraction=0.7)


def test_head_init_sets_marginal_hazards_and_swa_averages_last_epochs() -> None:
    data = make_synthetic_multimodal(n=80, seed=3, patches=(8, 10), patch_dim=4)
    m = ICFNet(epochs=1, d=8, lr=1e-9, head_init=True, balanced_sampler=False).fit(data)
    ybin = discretize(data.time, m.cuts_)
    h = np.array([(data.event & (ybin == k)).sum() / (ybin >= k).sum() for k in range(K)])
    for layer, _ in m.net_.output_layers():
        np.testing.assert_allclose(torch.sigmoid(layer.bias.detach()).numpy(), h, atol=1e-4)
    lf = LateFusion(epochs=1, d=8, lr=1e-9, head_init=True, balanced_sampler=False).fit(data)
    summed = sum(net.head.bias.detach() for net in lf.net_.nets.values())
    np.testing.assert_allclose(torch.sigmoid(summed).numpy(), h, atol=1e-4)  # the summed logits start calibrated
    kw = dict(epochs=4, d=8, random_state=0)
    last = ICFNet(swa=0.01, **kw).fit(data).predict(data)  # ceil(0.01 * 4) = 1 epoch: the last weights
    np.testing.assert_allclose(last, ICFNet(swa=0.0, **kw).fit(data).predict(data), atol=1e-6)
    avg = ICFNet(swa=0.5, **kw).fit(data).predict(data)
    assert np.isfinite(avg).all() and not np.allclose(avg, last)
    with pytest.raises(ValueError):
        ICFNet(swa=1.5)


def test_survival_functions_monotone_in_unit_interval_and_risk_orientation() -> None:
    data = make_synthetic_multimodal(n=120, seed=0, patches=(8, 12), patch_dim=8, missing_pathology=0.2)
    times = np.quantile(data.time, np.linspace(0.01, 0.99, 25))
    for model in (ICFNet(epochs=3, d=8, random_state=0), LateFusion(epochs=2, d=8), DeepSurv(epochs=3)):
        model.fit(data)
        s = model.predict_survival_function(data, times=times)
        assert s.shape == (len(data), times.size)
        assert np.all((s >= 0) & (s <= 1))
        assert np.all(np.diff(s, axis=1) <= 1e-12)
        risk = model.predict(data)
        assert np.isfinite(risk).all()
        assert model.score(data) == pytest.approx(harrell_c_index(data.time, data.event, risk))
    # higher risk = lower survival for the discrete-time model
    m = ICFNet(epochs=3, d=8, random_state=0).fit(data)
    s_mean = m.predict_survival_function(data, times=times).mean(1)
    assert np.corrcoef(s_mean, m.predict(data))[0, 1] < 0


def test_estimator_api_and_validation() -> None:
    data = make_synthetic_multimodal(n=60, seed=2, patches=(8, 10), patch_dim=4)
    with pytest.raises(ValueError):
        ICFNet(d=7, heads=2)
    with pytest.raises(ValueError):
        ICFNet(loss="hinge")
    with pytest.raises(UserError, match="not fitted"):
        ICFNet().predict(data)
    with pytest.raises(UserError, match="no modality"):
        ICFNet(modalities=["text"], epochs=1).fit(data)
    from sksurv.util import Surv

    m = ICFNet(epochs=1, d=4, heads=1, modalities=["genomics", "clinical"]).fit(data, Surv.from_arrays(data.event, data.time))
    assert m.predict(data).shape == (60,)
    # fourth-pass options (off by default): one token per tabular modality, whole-token dropout
    with pytest.raises(ValueError):
        ICFNet(tokens="gene")
    with pytest.raises(ValueError):
        ICFNet(token_dropout=1.0)
    one = ICFNet(epochs=1, d=4, heads=1, tokens="modality", token_dropout=0.5).fit(data)
    assert all(len(mod.groups) == 1 for mod in one._select(data).modalities.values() if mod.kind == "tabular")
    assert one.net_.tab_enc["genomics"].w1.shape[0] == 1 and np.isfinite(one.predict(data)).all()
    t, s = breslow_baseline(np.array([1.0, 2, 3]), np.array([True, True, False]), np.zeros(3))
    np.testing.assert_allclose(s, [1 / 3, 1 / 3 + 1 / 2])


def test_embedded_and_synthetic_data() -> None:
    bc = load_survival_dataset("breast_cancer")
    assert len(bc) == 198 and int(bc.event.sum()) == 51
    assert set(bc.modalities) == {"genomics", "clinical"} and bc.modalities["genomics"].dim == 76
    assert sum(len(g) for g in bc.modalities["genomics"].groups) == 76
    with pytest.raises(UserError, match="did you mean"):
        load_survival_dataset("breast_cancr")
    syn = make_synthetic_multimodal(n=300, seed=0, patches=(8, 12), patch_dim=8)
    assert 0.5 < syn.event.mean() < 0.7
    assert harrell_c_index(syn.time, syn.event, syn.true_risk) > 0.75  # the known signal is recoverable
    # development cohorts: breast_cancer covariates kept exactly, only time / event simulated
    for gen in (semi_synthetic_breast_cancer, semi_bio_breast_cancer):
        semi = gen()
        assert semi.ids.tolist() == bc.ids.tolist() and set(semi.modalities) == set(bc.modalities)
        for k, mod in bc.modalities.items():
            np.testing.assert_array_equal(semi.modalities[k].x, mod.x)
            assert semi.modalities[k].groups == mod.groups and semi.modalities[k].names == mod.names
        assert abs((1 - semi.event.mean()) - 0.74) < 0.02 and not np.allclose(semi.time, bc.time)
        again = gen()  # deterministic
        np.testing.assert_array_equal(semi.time, again.time)
        np.testing.assert_array_equal(semi.event, again.event)
        assert harrell_c_index(semi.time, semi.event, semi.true_risk) > 0.65
        assert abs(semi.true_risk.std() - 1.0) < 1e-6 and abs(semi.true_risk.mean()) < 1e-6
    # the bio generator's module rises with poor grade (proliferation-like) and carries the ER interaction
    m = module_score(bc)
    clin = bc.modalities["clinical"]
    assert np.corrcoef(m, clin.x[:, clin.names.index("grade=poorly differentiated")])[0, 1] > 0.3
    er = clin.x[:, clin.names.index("er=positive")] == 1
    only_module = semi_bio_breast_cancer(er=0.0, grade=0.0, size=0.0).true_risk
    slope_pos, slope_neg = (np.polyfit(m[sel], only_module[sel], 1)[0] for sel in (er, ~er))
    assert abs(slope_pos / slope_neg - 4.0) < 1e-6  # module effect 0.8 in ER+ vs 0.2 in ER-


def test_external_breast_cohorts() -> None:
    pytest.importorskip("SurvSet", reason="SurvSet (trustlab[dev]) not installed")
    expected = {"nki70": (144, 48, 70), "gse1992": (124, 35, 76), "gse4335": (115, 38, 76)}
    for name in EXTERNAL:
        d = external_breast_cohort(name)
        g, c = d.modalities["genomics"], d.modalities["clinical"]
        assert (len(d), int(d.event.sum()), g.dim) == expected[name] and (d.time > 0).all()
        assert len(g.groups) == 6 and sorted(j for grp in g.groups for j in grp) == list(range(g.dim))
        assert c.group_names == ["demographics", "tumour"] and np.isfinite(c.x).all() and np.isfinite(g.x).all()
        assert "age" in c.names[0].lower() and len(set(d.ids)) == len(d)
    # the variance filter keeps the most variable genes of the full cohort, without outcomes
    from SurvSet.data import SurvLoader

    frame = SurvLoader().load_dataset("gse1992")["df"]
    gse = external_breast_cohort("gse1992").modalities["genomics"]
    dropped = [col for col in frame.columns if col.startswith("num_HS_") and col not in gse.names]
    assert all(n.startswith("num_HS_") for n in gse.names) and len(dropped) > 10_000
    assert frame[gse.names].to_numpy(float).var(0).min() >= frame[dropped].to_numpy(float).var(0).max()
    with pytest.raises(UserError, match="unknown external cohort"):
        external_breast_cohort("metabric")


def test_user_csv_and_patch_loaders(tmp_path) -> None:
    import pandas as pd

    from trustlab.utils.io import save_tensors

    ids = ["A", "B", "C", "D"]
    pd.DataFrame({"patient_id": ids, "time": [1.0, 2, 3, 4], "event": [1, 0, 1, 1], "age": [50, 60, 70, 40],
                  "chemo": ["yes", "no", "yes", "no"]}).to_csv(tmp_path / "clin.csv", index=False)
    pd.DataFrame({"patient_id": ["A", "B", "C", "Z"], "g1": [0.1, 0.2, 0.3, 0.4], "g2": [1.0, 2, 3, 4]}).to_csv(
        tmp_path / "gen.csv", index=False)
    pdir = tmp_path / "patches"
    pdir.mkdir()
    np.save(pdir / "A.npy", np.ones((5, 3), np.float32))
    save_tensors(pdir / "B.safetensors", {"features": torch.zeros(7, 3)})
    np.save(pdir / "Q.npy", np.ones((2, 3), np.float32))  # unknown id -> ignored with a warning
    data = load_survival_csv(tmp_path / "clin.csv", genomics_csv=tmp_path / "gen.csv", patch_dir=pdir,
                             clinical_groups={"demographics": ["age"], "treatment": ["chemo"]},
                             gene_groups={"pathway": ["g1", "g2"]})
    assert data.modalities["genomics"].present.tolist() == [True, True, True, False]
    path = data.modalities["pathology"]
    assert path.present.tolist() == [True, True, False, False]
    assert path.mask.sum(1).tolist() == [5, 7, 0, 0]
    assert ICFNet(epochs=1, d=4, heads=1, batch_size=4).fit(data).predict(data).shape == (4,)
    with pytest.raises(UserError, match="matches a patient id"):
        load_patch_bags(pdir, ["X", "Y"])
    with pytest.raises(UserError, match="no patch file"):
        load_patch_bags(pdir, ["A", "B", "C"], require_all=True)
    with pytest.raises(UserError, match="does not exist"):
        load_patch_bags(tmp_path / "nope", ids)
    with pytest.raises(UserError, match="no column 'time'"):
        load_survival_csv(tmp_path / "gen.csv")
    (pdir / "C.h5").write_bytes(b"not hdf5")
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="h5py"):
            load_patch_bags(pdir, ids)


def test_quick_run_headline_and_key_figure(tmp_path) -> None:
    from trustlab.runner import run_system
    from trustlab.systems.icfnet import SYSTEM

    rec, out = run_system("icfnet", "quick", out=tmp_path / "run")
    assert (out / "results.json").is_file()
    mean = {(s["setting"], s["method"]): s["c_index_mean"] for s in rec.summary}
    for method, _, setting in SYSTEM.headline:
        assert 0.0 <= mean[(setting, method)] <= 1.0
    assert (out / "plots" / SYSTEM.key_figure).is_file() and f"plots/{SYSTEM.key_figure}" in rec.plots
    iv = rec.extra["cindex_intervals"]
    assert set(iv) == {"synthetic", "breast_cancer"}
    for setting, res in iv.items():
        for method, r in res.items():
            assert r["lo"] < r["c_index"] < r["hi"] and r["c_index"] == pytest.approx(mean[(setting, method)])
    assert {c["id"] for c in rec.claims} >= {"C1", "C2"}


def test_default_model_is_the_official_architecture_and_lite_is_a_named_row() -> None:
    from trustlab.systems.icfnet.config import Config
    from trustlab.systems.icfnet.devsearch import BASELINE_GRIDS, ICFNET_GRID
    from trustlab.systems.icfnet.experiment import make_model, methods_for

    cfg = Config()
    icf, lite = make_model("icfnet", cfg, 0, "cpu"), make_model("icfnet_lite", cfg, 0, "cpu")
    assert (icf.layers, icf.fusion_layers, icf.ot_iters, icf.ot_tol) == (2, 2, 1000, 1e-6)
    assert (lite.layers, lite.fusion_layers, lite.ot_iters, lite.ot_tol) == (0, 1, 5, 0.0)
    assert "icfnet_lite" in methods_for(make_synthetic_multimodal(n=30, seed=0), lite=cfg.lite)
    # the baselines' tuning grids have the size of ICFNet's
    assert all(len(g) == len(ICFNET_GRID) == 35 for g in BASELINE_GRIDS.values())
    rsf = make_model("rsf", Config(rsf_min_leaf=3, rsf_max_features=0.2), 0, "cpu")
    assert (rsf.min_samples_leaf, rsf.max_features) == (3, 0.2)
    ds = make_model("deepsurv", Config(deepsurv_weight_decay=0.0), 0, "cpu")
    shared = make_model("deepsurv", Config(deepsurv_weight_decay=None), 0, "cpu")
    assert ds.weight_decay == 0.0 and shared.weight_decay == Config().weight_decay
    assert make_model("early_fusion", Config(), 0, "cpu").weight_decay == Config().early_fusion_weight_decay
