"""NADAFD: smoke-scale run (ordering on a fixed seed) and unit tests of its modules, data and attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.attacks.triggers import (
    BadNetsTrigger,
    DBATrigger,
    SpeckleTrigger,
    model_replacement,
    poison_dataset,
)
from trustlab.data.partition import dirichlet_partition, iid_partition, pathological_partition
from trustlab.data.sar import gamma_speckle, load_sar_folder, simulate_sar_chips
from trustlab.errors import UserError
from trustlab.metrics.backdoor import attack_success_rate, clean_accuracy, detection_precision_recall
from trustlab.models.cnn import SARCNN
from trustlab.runner import run_system
from trustlab.systems.nadafd.method import (
    NADAFDStrategy,
    collusion_scores,
    consensus_target,
    decode_bank,
    encode_bank,
    health_update,
    highfreq_fraction,
    invert_triggers,
    naat_adversarial,
    physics_probes,
    robust_z,
    transfer_asymmetry,
    transfer_matrix,
)


def test_smoke_run_orders_methods(tmp_path) -> None:
    rec, out = run_system("nadafd", "smoke", out=tmp_path / "run", device="cpu")
    asr = {m: rec.mean(m, "asr", "speckle") for m in ("fedavg", "nadafd")}
    assert asr["fedavg"] >= 0.8, asr  # the attack works (else the comparison is empty)
    # Ordering on this fixed seed: NADAFD lowers the ASR of FedAvg. (The default run checks the issue's
    # stronger claims over 3 seeds; see the README.)
    assert asr["nadafd"] < asr["fedavg"], asr
    assert rec.mean("nadafd", "clean_acc", "speckle") > 0.5
    assert (out / "results.json").is_file() and {c["id"] for c in rec.claims} >= {"attack_works", "nadafd_asr"}


def test_gamma_speckle_moments() -> None:
    n = gamma_speckle((200_000,), 4.0, np.random.default_rng(0))
    assert abs(n.mean() - 1) < 0.01 and abs(n.var() - 0.25) < 0.01


def test_simulator_is_seeded_and_in_range() -> None:
    a = simulate_sar_chips(16, np.random.default_rng(3), num_classes=8, size=16)
    b = simulate_sar_chips(16, np.random.default_rng(3), num_classes=8, size=16)
    assert torch.equal(a.x, b.x) and a.x.shape == (16, 1, 16, 16) and 0 <= a.x.min() and a.x.max() <= 1
    assert set(a.y.tolist()) == set(range(8))


def test_folder_loader_and_errors(tmp_path) -> None:
    from PIL import Image

    with pytest.raises(UserError, match="does not exist"):
        load_sar_folder(tmp_path / "missing")
    with pytest.raises(UserError, match="no SAR chips"):
        load_sar_folder(tmp_path)
    for cls in ("BMP2", "T72"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray((np.random.default_rng(i).random((40, 30)) * 255).astype(np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    np.save(tmp_path / "T72" / "x.npy", np.ones((20, 20)))
    chips = load_sar_folder(tmp_path, size=16)
    assert chips.classes == ["BMP2", "T72"] and chips.x.shape == (5, 1, 16, 16) and chips.y.tolist() == [0, 0, 1, 1, 1]
    (tmp_path / "T72" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read"):
        load_sar_folder(tmp_path)


def test_partitions_cover_every_sample_once() -> None:
    y = np.repeat(np.arange(5), 40)
    for parts in (iid_partition(y, 4, np.random.default_rng(0)),
                  dirichlet_partition(y, 4, 0.5, np.random.default_rng(0)),
                  pathological_partition(y, 4, 2, np.random.default_rng(0))):
        allidx = np.concatenate(parts)
        assert sorted(allidx.tolist()) == list(range(200))
    assert all(len(set(y[p])) <= 2 for p in pathological_partition(y, 5, 2, np.random.default_rng(1)))
    a = dirichlet_partition(y, 4, 0.5, np.random.default_rng(7))
    b = dirichlet_partition(y, 4, 0.5, np.random.default_rng(7))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_triggers_touch_only_their_region() -> None:
    x = torch.full((2, 1, 16, 16), 0.3)
    for trig in (BadNetsTrigger(size=3), SpeckleTrigger(size=4), DBATrigger(parts=4)):
        out = trig(x)
        changed = (out != x).any(0).any(0)
        assert 0 < changed.sum() <= 16 and torch.equal(x, torch.full((2, 1, 16, 16), 0.3))
    dba = DBATrigger(parts=4)
    parts = [(dba(x, part=i) != x).any(0).any(0) for i in range(4)]
    assert torch.equal(torch.stack(parts).any(0), (dba(x) != x).any(0).any(0))
    xp, yp = poison_dataset(x.repeat(5, 1, 1, 1), torch.ones(10, dtype=torch.long), BadNetsTrigger(), 0, 0.5,
                            torch.Generator().manual_seed(0))
    assert int((yp == 0).sum()) == 5
    g = [np.zeros(3)]
    assert model_replacement([np.ones(3)], g, 4.0)[0].tolist() == [4.0, 4.0, 4.0]


def test_backdoor_metrics() -> None:
    assert clean_accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
    assert attack_success_rate([0, 0, 0], [0, 1, 2], target=0) == 1.0  # the target-class input is ignored
    assert detection_precision_recall({1, 2}, {2, 3}) == (0.5, 0.5)


def test_nadafd_module_maths() -> None:
    z = robust_z(np.array([1.0, 1.1, 0.9, 1.0, 5.0]))
    assert z.argmax() == 4 and z[4] > 3
    h = 1.0
    for _ in range(5):
        h = health_update(h, 0.0, 0.7)
    assert h == pytest.approx(0.7**5)
    bank = [(torch.rand(8, 8), torch.rand(8, 8))]
    back = decode_bank(encode_bank(bank))
    assert torch.allclose(back[0][0], bank[0][0]) and decode_bank(b"") == []


def test_dha_collusion_term_penalises_a_shared_deviation() -> None:
    rng = np.random.default_rng(0)
    common = rng.normal(size=200)
    backdoor = rng.normal(size=200)
    benign = [common + 0.8 * rng.normal(size=200) for _ in range(7)]  # idiosyncratic (non-IID) deviations
    attackers = [common + 0.8 * rng.normal(size=200) + 1.5 * backdoor for _ in range(3)]
    u = np.stack(benign + attackers)
    g = collusion_scores(u, group=2)
    assert g.shape == (10,) and g[7:].min() > g[:7].max()
    assert np.allclose(collusion_scores(u[[3, 1, 0, 2, 9, 8, 7, 6, 5, 4]], 2), g[[3, 1, 0, 2, 9, 8, 7, 6, 5, 4]])
    strat = NADAFDStrategy(lambda: SARCNN(num_classes=2, image_size=12, width=2, hidden=8), 12, 2, use_fdci=False)
    q = strat.behaviour_quality(u)
    assert q[7:].max() < 0.5 * q[:7].min()
    off = NADAFDStrategy(lambda: SARCNN(num_classes=2, image_size=12, width=2, hidden=8), 12, 2, use_fdci=False,
                         collusion=False)
    assert off.behaviour_quality(u)[7:].min() > q[7:].max()
    assert robust_z(np.array([0.2, 0.21, 0.2, 0.2, 0.6]), floor=0.05)[4] == pytest.approx(8.0)


def test_fdci_inversion_and_spectral_statistic() -> None:
    probes = physics_probes(3, 12, 2.0, np.random.default_rng(0))
    assert probes.shape == (3, 1, 12, 12) and 0 <= probes.min() and probes.max() <= 1
    torch.manual_seed(0)
    models = [SARCNN(num_classes=4, image_size=12, width=2, hidden=8) for _ in range(2)]
    before = [p.clone() for p in models[0].parameters()]
    masks, pats, succ = invert_triggers(models, probes, 4, steps=3, cost=0.1)
    assert masks.shape == pats.shape == (2, 4, 12, 12) and succ.shape == (2, 4)
    assert 0 <= masks.min() and masks.max() <= 1 and all(torch.equal(a, b) for a, b in
                                                          zip(before, models[0].parameters(), strict=True))
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    blob = torch.exp(-((yy - 6) ** 2 + (xx - 6) ** 2) / 8)
    checker = ((yy + xx) % 2).float()
    assert highfreq_fraction(checker) > 0.9 > 0.1 > highfreq_fraction(blob)


def test_fdci_consensus_target_and_transfer_asymmetry() -> None:
    # class 1: one client far out (label skew); class 2: two clients out together (a shared backdoor)
    z = np.zeros((5, 3))
    z[0, 1] = 9.0
    z[[3, 4], 2] = 3.0
    assert consensus_target(z, 2) == 2 and consensus_target(z, 1) == 1
    # clients 0, 1 share a backdoor: their triggers flip only their models, everyone's trigger flips theirs
    t = np.zeros((4, 1, 4))
    t[:, 0, 0] = t[:, 0, 1] = 1.0
    t[2, 0, :] = t[3, 0, :] = 1.0  # benign class evidence transfers everywhere
    a = transfer_asymmetry(t)[:, 0]
    assert a[:2].min() > 0.5 > a[2:].max()
    probes = physics_probes(2, 12, 2.0, np.random.default_rng(0))
    torch.manual_seed(0)
    models = [SARCNN(num_classes=3, image_size=12, width=2, hidden=8) for _ in range(2)]
    tm = transfer_matrix(models, torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12), probes)
    assert tm.shape == (2, 3, 2) and 0 <= tm.min() and tm.max() <= 1


def test_naat_samples_stay_in_range_and_touch_a_mask_only() -> None:
    x = torch.full((6, 1, 12, 12), 0.3)
    y = torch.zeros(6, dtype=torch.long)
    model = SARCNN(num_classes=4, image_size=12, width=2, hidden=8)
    adv = naat_adversarial(model, x, y, [], eps=0.05, steps=1, looks=[1.0], generator=torch.Generator().manual_seed(0),
                           offset=0.3)
    changed = (adv != x).flatten(1).float().sum(1)
    assert adv.shape == x.shape and 0 <= adv.min() and adv.max() <= 1
    assert torch.all(changed >= 1) and torch.all(changed <= 9 * 9)  # one square of side <= h/4 + 1
