"""NADAFD protocol pieces: distinct triggers per attacker, ASR over several triggers, attacker-fraction
settings and the paired-interval summary (cross-checked against scipy's paired t-test)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from trustlab.data.sar import SARChips, simulate_sar_chips
from trustlab.errors import UserError
from trustlab.models.cnn import SARCNN
from trustlab.systems.nadafd.clients import make_clients
from trustlab.systems.nadafd.config import Config
from trustlab.systems.nadafd.data import (
    FedData,
    PatternTrigger,
    attacker_triggers,
    eval_triggers,
    make_trigger_for,
)
from trustlab.systems.nadafd.experiment import attack_of, make_evaluator, settings
from trustlab.systems.nadafd.protocol import best_baseline, paired_interval, verdict, write_protocol_summary


def _chips(n: int = 12, seed: int = 0) -> SARChips:
    return simulate_sar_chips(n, np.random.default_rng(seed), num_classes=8, size=24)


@pytest.mark.parametrize("attack", ["speckle", "badnets"])
def test_distinct_triggers_stamp_different_images_per_attacker(attack: str) -> None:
    x = _chips().x
    cfg = Config(distinct_triggers=True)
    t = attacker_triggers(attack, cfg, 3, seed=10)
    stamped = [tr(x) for tr in t]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(stamped[i], stamped[j]), (attack, i, j)
    # same region as the shared trigger, only the pattern differs
    region = make_trigger_for(attack, cfg).mask(x.shape)
    assert all(torch.equal(tr.mask(x.shape) * region, tr.mask(x.shape)) for tr in t)
    # seeded: the same run seed gives the same triggers; another run seed others
    again = attacker_triggers(attack, cfg, 3, seed=10)
    assert all(torch.equal(a(x), b(x)) for a, b in zip(t, again, strict=True))
    assert not torch.equal(attacker_triggers(attack, cfg, 1, seed=11)[0](x), stamped[0])
    # distinct_triggers=false: every attacker shares one trigger
    shared = attacker_triggers(attack, replace(cfg, distinct_triggers=False), 3, seed=10)
    assert all(torch.equal(s(x), shared[0](x)) for s in shared)


def test_pattern_trigger_is_a_mixed_binary_patch() -> None:
    for s in range(20):
        p = PatternTrigger(size=4, seed=s).pattern()
        assert set(p.unique().tolist()) == {0.0, 1.0}


def test_each_attacker_client_gets_its_own_trigger_and_dba_its_own_part() -> None:
    chips = _chips(40)
    parts = [np.arange(i * 10, (i + 1) * 10) for i in range(4)]
    mal = [3, 1]
    cfg = Config(distinct_triggers=True)
    trig = attacker_triggers("badnets", cfg, 2, seed=0)

    def model_fn() -> torch.nn.Module:
        return SARCNN(num_classes=8, image_size=24, width=2)

    cl = make_clients(chips.x, chips.y, parts, mal, trig, False, model_fn, 0, epochs=1, batch_size=8, lr=0.01,
                      momentum=0.0)
    assert cl[1].trigger is trig[0] and cl[3].trigger is trig[1] and cl[0].trigger is None and cl[2].trigger is None
    dba = attacker_triggers("dba", cfg, 2, seed=0)
    cl = make_clients(chips.x, chips.y, parts, mal, dba, True, model_fn, 0, epochs=1, batch_size=8, lr=0.01,
                      momentum=0.0)
    assert (cl[1].dba_part, cl[3].dba_part) == (0, 1)
    x = chips.x[:2]
    a, b = cl[1].trigger(x, cl[1].dba_part), cl[3].trigger(x, cl[3].dba_part)
    assert not torch.equal(a, b)  # distinct local parts
    # ASR of DBA uses the assembled global trigger
    (glob,) = eval_triggers("dba", cfg, 2, seed=0)
    full = glob(x)
    ca, cb, cf = a != x, b != x, full != x
    assert not (ca & ~cf).any() and not (cb & ~cf).any() and not (ca & cb).any()  # parts of the global trigger
    assert int(cf.sum()) > int((ca | cb).sum())  # the global trigger has the parts no attacker holds
    with pytest.raises(ValueError, match="triggers for"):
        make_clients(chips.x, chips.y, parts, mal, trig[:1], False, model_fn, 0, epochs=1, batch_size=8, lr=0.01,
                     momentum=0.0)


class _RecognisesOne(torch.nn.Module):
    """Predicts the target class (0) iff the top-left patch equals one trigger's pattern, else class 1."""

    def __init__(self, trigger: PatternTrigger) -> None:
        super().__init__()
        self.p = trigger.pattern()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x[:, 0, 1:5, 1:5] == self.p).flatten(1).all(1).float()
        return torch.stack([hit, 1 - hit], 1) + 0 * self.w


def test_asr_is_measured_with_each_attackers_trigger() -> None:
    cfg = Config(distinct_triggers=True, target_class=0)
    chips = _chips(30)
    data = FedData(chips, chips, chips, [], [1, 2], 8)
    trig = eval_triggers("badnets", cfg, 2, seed=3)
    assert len(trig) == 2
    model = _RecognisesOne(trig[0])
    ev = make_evaluator(cfg, data, trig, lambda: _RecognisesOne(trig[0]))
    out = ev(0, [p.detach().numpy() for p in model.parameters()])
    # the model carries attacker 0's backdoor only: ASR 1 on its trigger, 0 on attacker 1's
    assert out["asr_max"] == 1.0 and out["asr"] == pytest.approx(0.5)
    out1 = make_evaluator(cfg, data, trig[1:], lambda: _RecognisesOne(trig[0]))(0, [np.zeros(1, np.float32)])
    assert out1["asr"] == 0.0 == out1["asr_max"]


def test_attacker_fraction_settings_and_validation() -> None:
    cfg = Config(attacks=["speckle", "dba"], malicious_fractions=[0.1, 0.3])
    assert settings(cfg) == [("speckle_m0.1", 0.1), ("speckle_m0.3", 0.3), ("dba_m0.1", 0.1), ("dba_m0.3", 0.3)]
    assert settings(Config()) == [("speckle", 0.3)]
    assert [attack_of(s) for s in ("speckle", "badnets_m0.2", "no_attack")] == ["speckle", "badnets", None]
    for bad in ([0.5], [0.2, 0.2]):
        with pytest.raises(UserError):
            Config(malicious_fractions=bad).validate()


def test_paired_interval_matches_scipy_and_verdicts() -> None:
    a, b = [0.10, 0.05, 0.20, 0.08, 0.12], [0.30, 0.10, 0.25, 0.40, 0.15]
    mu, lo, hi = paired_interval(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mu == pytest.approx(np.mean(np.subtract(a, b))) and (lo, hi) == pytest.approx((ci.low, ci.high))
    assert verdict(lo, hi, lower_is_better=True) == ("win" if hi < 0 else "tie")
    assert verdict(-0.2, -0.1, True) == "win" and verdict(0.1, 0.2, True) == "loss"
    assert verdict(-0.1, 0.2, True) == "tie" and verdict(0.1, 0.2, False) == "win"


def test_protocol_summary_picks_the_best_baseline_and_writes_files(tmp_path) -> None:
    cfg = Config(attacks=["speckle"], malicious_fractions=[0.1, 0.3], methods=["fedavg", "median", "nadafd"],
                 rounds=2)
    rng = np.random.default_rng(0)
    rows, series = [], []
    for seed in range(5):
        for setting in ("speckle_m0.1", "speckle_m0.3", "no_attack"):
            for m, asr in (("fedavg", 0.9), ("median", 0.3), ("nadafd", 0.05)):
                if setting == "no_attack" and m == "median":
                    continue
                r = {"setting": setting, "method": m, "seed": seed, "asr": asr + 0.01 * rng.random(),
                     "asr_max": asr + 0.02, "clean_acc": 0.8 + 0.01 * rng.random()}
                rows.append(r)
                series += [{**r, "step": s} for s in range(3)]
    plots = write_protocol_summary(rows, series, cfg, tmp_path)
    by = {(r["setting"], r["method"]): {} for r in rows}
    for r in rows:
        by[(r["setting"], r["method"])][r["seed"]] = r
    assert best_baseline(by, "speckle_m0.3") == "median"
    md = (tmp_path / "summary.md").read_text()
    assert "best baseline: median" in md and "| nadafd − median |" in md and "| win |" in md
    assert "no attack" in md and set(plots) == {"plots/asr_clean_vs_round.png", "plots/asr_vs_attacker_fraction.png"}
    assert all((tmp_path / p).stat().st_size > 1000 for p in plots)
