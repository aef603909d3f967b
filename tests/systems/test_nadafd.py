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
    # the demo scale (5 clients, 6 rounds) with FedAvg and NADAFD only: ~3x cheaper than ``smoke``
    rec, out = run_system("nadafd", "quick", overrides=["methods=[fedavg,nadafd]"], out=tmp_path / "run",
                          device="cpu")
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
    strat = NADAFDStrategy(lambda: SARCNN(num_classes=2, image_size=12, width=2, hidden=8), 12, 2, use_fdci=False,
                           collusion=True)  # the nadafd_collusion row
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


# ------------------------------------------------------------------------------------ issue 21 additions
def test_fed_nadafd_saves_a_model_that_reloads_to_the_reported_clean_accuracy(tmp_path) -> None:
    from trustlab.cli import main
    from trustlab.systems.nadafd.data import build_data
    from trustlab.systems.nadafd.fed import fed_config, load_global_model
    from trustlab.utils.io import read_json

    args = ["fed", "nadafd", "--engine", "flower-inline", "--num-clients", "4", "--fraction-fit", "0.5", "--rounds", "2",
            "--method", "fedavg", "--attack", "badnets", "--seed", "3", "--set", "n_test=120"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    res = read_json(tmp_path / "run" / "results.json")
    assert [len(r["selected"]) for r in res["rounds_log"][1:]] == [2, 2]
    model = load_global_model(tmp_path / "run")
    data = build_data(fed_config(4, 0.5, 2, 3, overrides={"n_test": 120}), 3)
    with torch.no_grad():
        acc = clean_accuracy(model(data.test.x).argmax(1).numpy(), data.test.y.numpy())
    assert acc == pytest.approx(res["metrics"]["clean_acc"])
    assert main([*args[:2], "--engine", "bogus", "--out", str(tmp_path / "x")]) == 2
    assert main([*args[:2], "--method", "nope", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(UserError):
        load_global_model(tmp_path / "missing")


def _attack_updates(k: int = 10, n_bad: int = 3, rounds: int = 4, seed: int = 0):  # noqa: ANN202
    """Benign updates around a common direction; attackers share one far-off direction."""
    rng = np.random.default_rng(seed)
    d = 50
    base, evil = rng.normal(size=d), rng.normal(size=d) * 4
    out = []
    for _ in range(rounds):
        u = base + 0.7 * rng.normal(size=(k, d))
        u[:n_bad] = evil + 0.05 * rng.normal(size=(n_bad, d))
        out.append(u)
    return out, base, evil


def test_dha_downweights_attackers_and_is_not_fedavg() -> None:
    # NADAFD's server without FDCI (no model to invert here): DHA's health + clipped weighted median
    s = NADAFDStrategy(lambda: SARCNN(num_classes=2, image_size=12), 12, 2, use_fdci=False)
    rounds, base, evil = _attack_updates()
    for t, u in enumerate(rounds, 1):
        res = s.aggregate_updates(t, u, np.ones(len(u)), list(range(100, 110)), [np.zeros(u.shape[1])])
    fedavg = rounds[-1].mean(0)
    assert not res.accepted[:3].any() and res.accepted[3:].all()
    assert all(s.health_[100 + i] < s.tau for i in range(3)) and all(s.health_[100 + i] >= s.tau for i in range(3, 10))
    assert np.linalg.norm(res.update - base) < 0.5 * np.linalg.norm(fedavg - base)  # FedAvg is pulled to the attackers


def test_nadafd_state_is_keyed_by_node_id_under_partial_participation() -> None:
    from trustlab.federated import FitReply
    from trustlab.federated.flower import InlineGrid, MessageStrategy, make_client_app

    rounds, _, _ = _attack_updates(k=6, n_bad=2, rounds=4)

    class C:
        def __init__(self, pid: int) -> None:
            self.cid, self.state = pid, {}

        def fit(self, params, config):  # noqa: ANN001, ANN202
            r = int(config["server_round"])
            return FitReply(0, [params[0] + rounds[r - 1][self.cid]], 10, {"cid": 0})  # everyone claims id 0

    s = NADAFDStrategy(lambda: SARCNN(num_classes=2, image_size=12), 12, 2, use_fdci=False)
    grid = InlineGrid(make_client_app(lambda pid, ctx: C(pid)), 6, seed=1)
    ms = MessageStrategy(s, fraction_train=0.67, min_available_nodes=6, seed=0)
    hist = ms.run(grid, [np.zeros(50)], num_rounds=4)
    assert set(s.health_) <= set(grid.nodes) and 0 not in s.health_ and len(s.health_) == 6
    attackers = {n for n, p in grid.nodes.items() if p < 2}
    late = {c: h for c, h in s.health_.items()}
    assert max(late[c] for c in attackers) < min(late[c] for c in set(grid.nodes) - attackers)
    assert all(len(r.selected) == 4 for r in hist.rounds[1:])


def test_nadafd_row_is_the_abstracts_three_modules_and_collusion_is_its_own_row() -> None:
    from trustlab.systems.nadafd.config import ALL_METHODS, Config
    from trustlab.systems.nadafd.data import build_data
    from trustlab.systems.nadafd.experiment import make_strategy

    cfg = Config.for_scale("quick")
    data = build_data(cfg, 0)
    full, coll = make_strategy("nadafd", cfg, data, 0), make_strategy("nadafd_collusion", cfg, data, 0)
    assert full.use_fdci and full.use_naat and full.use_dha and not full.collusion
    assert coll.collusion and "nadafd_collusion" in ALL_METHODS and "bulyan" in ALL_METHODS
    tm = make_strategy("trimmed_mean", cfg, data, 0)
    assert int(tm.round_beta(10) * 10) >= round(cfg.malicious_fraction * 10)
