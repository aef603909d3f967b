"""Flower's Simulation Engine (Ray backend) runs a NADAFD-system federation and matches the in-process loop.

One Ray start per test session (~20-60 s on the 2-core machine): a small FedAvg case, same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from trustlab.systems.nadafd.fed import fed_run, load_global_model  # noqa: E402


def test_flower_simulation_engine_and_inprocess_give_the_same_model(tmp_path: Path) -> None:
    kw = {"num_clients": 4, "fraction_fit": 1.0, "rounds": 2, "method": "fedavg", "attack": "badnets", "seed": 1,
          "overrides": {"n_train": 120, "n_test": 100}}
    sim = fed_run(tmp_path / "sim", engine="flower-sim", **kw)
    ref = fed_run(tmp_path / "inproc", engine="inprocess", **kw)
    a = load_global_model(tmp_path / "sim").state_dict()
    b = load_global_model(tmp_path / "inproc").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6)
    assert sim["metrics"]["clean_acc"] == pytest.approx(ref["metrics"]["clean_acc"])
    assert [sorted(r["selected"]) for r in sim["rounds_log"][1:]] == [[0, 1, 2, 3]] * 2  # relabelled to partitions
