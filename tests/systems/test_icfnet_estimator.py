"""ICFNet as a scikit-survival estimator: DataFrame layout, sklearn model selection, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sksurv.functions import StepFunction
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from trustlab.data.survival import dataset_to_frame, frame_layout, frame_to_dataset, make_synthetic_multimodal
from trustlab.errors import UserError
from trustlab.systems.icfnet.method import ICFNet

TINY = dict(d=4, heads=1, layers=1, fusion_layers=1, epochs=2, batch_size=16, random_state=0)


@pytest.fixture(scope="module")
def cohort():
    data = make_synthetic_multimodal(n=60, seed=0, patches=(6, 10), patch_dim=4, gene_groups=3, genes_per_group=3)
    frame = dataset_to_frame(data)
    y = Surv.from_arrays(data.event, data.time)
    return data, frame, y


def test_frame_layout_round_trip_and_missing_modalities(cohort) -> None:
    data, frame, y = cohort
    assert frame.shape == (60, 9 + 1 + 3) and frame.index.name == "patient_id"
    assert "genomics/genes0/g0_0" in frame.columns and frame["pathology"].iloc[0].shape[1] == 4
    layout = frame_layout(frame)
    assert layout["tabular"]["genomics"]["group_names"] == ["genes0", "genes1", "genes2"]
    assert layout["tabular"]["clinical"]["groups"] == [[0, 1], [2]]
    back = frame_to_dataset(frame, layout, data.time, data.event)
    np.testing.assert_allclose(back.modalities["genomics"].x, data.modalities["genomics"].x, rtol=1e-6)
    np.testing.assert_array_equal(back.modalities["pathology"].mask, data.modalities["pathology"].mask)
    # missing modality per patient: all-NaN genomics, no slide; a categorical clinical column
    f2 = frame.copy()
    f2.iloc[:5, [i for i, c in enumerate(f2.columns) if c.startswith("genomics/")]] = np.nan
    f2.loc[f2.index[5:8], "pathology"] = None
    f2["clinical/site"] = ["a", "b", "c"] * 20
    lay2 = frame_layout(f2)
    assert lay2["tabular"]["clinical"]["levels"]["clinical/site"] == ["a", "b", "c"]
    ds = frame_to_dataset(f2, lay2, max_patches=7)
    assert ds.modalities["genomics"].present[:5].sum() == 0 and ds.modalities["genomics"].present[5:].all()
    assert not ds.modalities["pathology"].present[5:8].any() and ds.modalities["pathology"].mask.sum(1).max() == 7
    assert ds.modalities["pathology"].info["truncated_bags"] > 0
    assert ds.modalities["clinical"].dim == 3 + 2  # one-hot without the first level
    with pytest.raises(UserError, match="no column 'clinical/site'"):
        frame_to_dataset(frame, lay2)


def test_sksurv_contract_on_dataframe(cohort) -> None:
    data, frame, y = cohort
    model = ICFNet(**TINY).fit(frame, y)
    risk = model.predict(frame)
    assert risk.shape == (60,) and np.isfinite(risk).all()
    assert model.score(frame, y) == pytest.approx(concordance_index_censored(data.event, data.time, risk)[0])
    fns = model.predict_survival_function(frame.iloc[:3])
    assert len(fns) == 3 and isinstance(fns[0], StepFunction)
    arr = model.predict_survival_function(frame.iloc[:3], return_array=True)
    assert arr.shape == (3, len(model.unique_times_)) and np.all(np.diff(arr, axis=1) <= 1e-7)
    np.testing.assert_allclose(fns[1](model.unique_times_), arr[1])
    # the same numbers as on the equivalent SurvivalDataset
    same = ICFNet(**TINY).fit(data)
    np.testing.assert_allclose(same.predict(data), risk, rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match="needs y"):
        ICFNet(**TINY).fit(frame)
    with pytest.raises(UserError, match="fitted on a DataFrame"):
        model.predict(data)


def test_get_set_params_clone_and_set_params_validation() -> None:
    m = ICFNet(d=8, heads=2, lr=3e-3, modalities=["genomics"])
    p = m.get_params()
    assert p["d"] == 8 and p["lr"] == 3e-3 and p["modalities"] == ["genomics"] and p["ot_iters"] == 1000
    c = clone(m)
    assert c.get_params() == p and c is not m
    assert m.set_params(lr=1e-2).lr == 1e-2
    m.set_params(d=7)  # invalid now: caught at fit
    with pytest.raises(ValueError, match="divisible"):
        m.fit(make_synthetic_multimodal(n=30, seed=0))


def test_cross_val_score_and_gridsearch(cohort) -> None:
    data, frame, y = cohort
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(ICFNet(**TINY), frame, y, cv=cv)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    grid = GridSearchCV(ICFNet(**TINY), {"lr": [1e-3, 1e-2]}, cv=cv).fit(data, y)  # SurvivalDataset X also splits
    assert grid.best_params_["lr"] in (1e-3, 1e-2) and len(grid.cv_results_["mean_test_score"]) == 2
    assert grid.best_estimator_.predict(data).shape == (60,)


def test_save_load_identical_predictions(cohort, tmp_path) -> None:
    data, frame, y = cohort
    f2 = frame.copy()
    f2.iloc[:4, [i for i, c in enumerate(f2.columns) if c.startswith("genomics/")]] = np.nan
    f2.loc[f2.index[4:6], "pathology"] = None
    model = ICFNet(**TINY).fit(f2, y)
    out = model.save(tmp_path / "m")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "model.json"}
    back = ICFNet.load(out)
    np.testing.assert_array_equal(back.predict(f2), model.predict(f2))
    np.testing.assert_array_equal(back.predict_survival_function(f2, return_array=True),
                                  model.predict_survival_function(f2, return_array=True))
    assert back.get_params() == model.get_params()
    with pytest.raises(UserError, match="no model.json"):
        ICFNet.load(tmp_path)


def test_training_learns_signal_not_a_noop(cohort) -> None:
    """A model that is not trained (or whose fit is a no-op) ranks the training patients near chance."""
    data, frame, y = cohort
    trained = ICFNet(**dict(TINY, epochs=30, d=8, heads=2, lr=5e-3)).fit(frame, y)
    untrained = ICFNet(**dict(TINY, epochs=1, lr=1e-9)).fit(frame, y)
    assert trained.score(frame, y) > 0.65 and untrained.score(frame, y) < 0.6
