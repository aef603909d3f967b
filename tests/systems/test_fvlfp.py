"""FVL-FP: smoke run ordering, component maths, communication, backbones and data loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trustlab.data.fair_vl import FairVLSpec, make_federation, make_world, sample_batch
from trustlab.errors import UserError
from trustlab.metrics.fairness import eo_diff
from trustlab.models.tiny_clip import HFCLIPBackbone, TinyCLIP, TinyCLIPConfig, WordTokenizer
from trustlab.systems.fvlfp.baselines import eo_from_counts, fairfed_weights, qffl_aggregate
from trustlab.systems.fvlfp.method import (
    FLAGS,
    PromptLearner,
    counterfactual_swap,
    fpf_weights,
    group_projection,
    group_shifts,
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from trustlab.runner import run_system

    out = tmp_path_factory.mktemp("fvlfp-smoke")
    rec, path = run_system("fvlfp", "smoke", out=out)
    return {"rec": rec, "path": path}


def test_smoke_run_orders_methods(smoke: dict) -> None:
    rec = smoke["rec"]
    res = json.loads((smoke["path"] / "results.json").read_text())
    methods = {r["method"] for r in res["rows"]}
    assert {"zero_shot", "promptfl", "fairfed", "qffl", "fvlfp", "fvlfp_no_cdfp", "fvlfp_no_dsop", "fvlfp_no_fpf"} <= methods
    for r in res["rows"]:
        for k in ("acc", "dp_diff", "eo_diff", "worst_group_acc"):
            assert 0.0 <= r[k] <= 1.0
    dp_p, dp_f = rec.mean("promptfl", "dp_diff"), rec.mean("fvlfp", "dp_diff")
    assert dp_p >= 0.2, "the planted bias must be visible in the PromptFL model"
    assert dp_f <= 0.65 * dp_p, (dp_f, dp_p)
    assert rec.mean("fvlfp", "acc") >= rec.mean("promptfl", "acc") - 0.06
    assert dp_f < rec.mean("fairfed", "dp_diff") and dp_f < rec.mean("qffl", "dp_diff")
    claims = {c["id"]: c for c in res["claims"]}
    assert claims["C0"]["holds"] and claims["C1"]["holds"] and claims["C2"]["holds"]


def test_only_prompts_are_communicated(smoke: dict) -> None:
    rows = {r["method"]: r for r in smoke["rec"].rows}
    # PromptFL sends M x W floats; FVL-FP adds deep prompts at the other text layers; never encoder weights
    assert rows["promptfl"]["bytes_per_client_round"] == 4 * 4 * 64
    assert rows["fvlfp"]["bytes_per_client_round"] == 4 * 4 * 64 * 2


def test_group_projection_removes_group_span() -> None:
    g = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    p = group_projection(g)
    assert torch.allclose(p, p.t(), atol=1e-6) and torch.allclose(p @ p, p, atol=1e-5)
    assert torch.allclose((g - g.mean(0)) @ p, torch.zeros(3, 8), atol=1e-5)
    with pytest.raises(ValueError):
        group_projection(g[:1])


def test_within_class_counterfactual_ignores_class_signal() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 4000
    y = torch.randint(0, 2, (n,), generator=gen)
    a = torch.where(torch.rand(n, generator=gen) < 0.9, y, 1 - y)  # skewed client
    cls_dir, grp_dir = torch.eye(4)[0], torch.eye(4)[1]
    z = y[:, None] * cls_dir + a[:, None] * grp_dir + 0.1 * torch.randn(n, 4, generator=gen)
    s = group_shifts(z, y, a, 2, 2)
    assert torch.allclose(s[0, 1], grp_dir, atol=0.05)  # the naive group-mean gap would be ~0.8 * cls_dir + grp_dir
    zc = counterfactual_swap(z, a, s)
    assert torch.allclose((zc - z)[a == 1].mean(0), -grp_dir, atol=0.05)


def test_server_weight_rules() -> None:
    w = fpf_weights(np.array([100.0, 100.0, 300.0]), np.array([0.8, 0.8, 0.8]), np.array([0.0, 0.0, 0.0]), 10, 2)
    assert np.allclose(w, [0.2, 0.2, 0.6])
    w = fpf_weights(np.ones(2), np.array([0.9, 0.85]), np.array([0.3, 0.05]), 10, 2)
    assert w[1] > w[0]  # the fairer client gains weight even with lower accuracy
    ff = fairfed_weights(np.array([0.5, 0.5]), np.array([0.1, 0.3]), 0.1, 0.5)
    assert ff[0] > ff[1] and np.isclose(ff.sum(), 1)
    u = np.random.default_rng(0).normal(size=(4, 6))
    agg = qffl_aggregate(u, np.array([1.0, 2.0, 3.0, 4.0]), q=0.0, lipschitz=10.0)
    assert np.allclose(agg.update, u.mean(0))  # q = 0 is plain averaging
    agg1 = qffl_aggregate(u, np.array([1.0, 2.0, 3.0, 4.0]), q=1.0, lipschitz=10.0)
    assert np.all(np.diff(agg1.weights) > 0)  # higher loss, more weight


def test_eo_from_counts_matches_samples() -> None:
    rng = np.random.default_rng(3)
    y, p, a = rng.integers(0, 2, 500), rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    counts = np.zeros((2, 2, 2))
    np.add.at(counts, (a, y, p), 1)
    assert eo_from_counts(counts) == pytest.approx(eo_diff(y, p, a))


def test_fair_vl_generator() -> None:
    world = make_world(FairVLSpec())
    b1 = sample_batch(world, 2000, 0.9, np.random.default_rng(0))
    b2 = sample_batch(world, 2000, 0.9, np.random.default_rng(0))
    assert torch.equal(b1.images, b2.images) and b1.images.shape == (2000, 1, 12, 12)
    assert float((b1.groups == b1.labels).float().mean()) == pytest.approx(0.9, abs=0.03)
    fed = make_federation(world, [0.95, 0.5], 50, 20, 20, 400, np.random.default_rng(1))
    cells = np.bincount((fed.test.labels * 2 + fed.test.groups).numpy(), minlength=4)
    assert cells.tolist() == [100, 100, 100, 100]
    with pytest.raises(ValueError):
        FairVLSpec(class_names=("a", "b"), group_names=("a", "c"))


def test_tiny_clip_prompt_interface_and_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    m = TinyCLIP(TinyCLIPConfig(vocab=["a", "photo", "of", "smiling", "frowning", "young", "old", "person"], width=32,
                                embed_dim=16, image_hidden=32)).eval()
    ids = m.tokenize(["x x x x smiling person"])
    # prompts equal to the placeholder embeddings reproduce plain text encoding
    learner = PromptLearner(m, ["smiling", "frowning"], ["young", "old"], n_ctx=4)
    with torch.no_grad():
        learner.ctx.copy_(m.token_embed(ids)[0, 1:5])
        assert torch.allclose(learner.text_features(m, "class")[0], F.normalize(m.encode_text(ids), dim=-1)[0], atol=1e-5)
    assert list(learner.state_dict()) == ["ctx"]
    assert list(PromptLearner(m, ["smiling", "frowning"], ["young", "old"], 4, deep=True).state_dict()) == ["ctx", "deep_ctx"]
    m.save(tmp_path / "m.safetensors")
    m2 = TinyCLIP.load(tmp_path / "m.safetensors")
    x = torch.randn(3, 1, 12, 12)
    assert torch.allclose(m.encode_image(x), m2.encode_image(x))
    with pytest.raises(ValueError, match="vocabulary"):
        WordTokenizer(["a"])(["a zebra"])
    with pytest.raises(UserError):
        TinyCLIP.load(tmp_path / "missing.safetensors")


def _tiny_hf_clip(path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz.")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    cfg = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 40, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 16, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def test_hf_clip_adapter_matches_transformers(tmp_path) -> None:
    _tiny_hf_clip(tmp_path)
    bb = HFCLIPBackbone.from_pretrained(tmp_path)
    ids = bb.tokenize(["x x x x smiling person", "a photo"])
    with torch.no_grad():
        ref = bb.model.get_text_features(input_ids=ids)
        ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
        assert torch.allclose(bb.encode_text(ids), ref, atol=1e-5)
        learner = PromptLearner(bb, ["smiling", "frowning"], ["young", "old"], n_ctx=4, deep=True)
        assert learner.text_features(bb, "class").shape == (2, 16)
        assert bb.encode_image(torch.randn(2, 3, 16, 16)).shape == (2, 16)
    with pytest.raises(UserError, match="does not exist"):
        HFCLIPBackbone.from_pretrained(tmp_path / "nope")


def test_config_and_data_errors(tmp_path) -> None:
    from trustlab.config import load_config
    from trustlab.systems.fvlfp.config import Config
    from trustlab.systems.fvlfp.data import load_npz_federation

    with pytest.raises(UserError, match="unknown"):
        load_config(Config, "smoke", overrides=["methods=[fedprox]"])
    with pytest.raises(UserError, match="needs your own data"):
        load_config(Config, "smoke", overrides=["backbone=/some/clip"])
    with pytest.raises(UserError, match="does not exist"):
        load_npz_federation(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(UserError, match="lacks keys"):
        load_npz_federation(tmp_path / "bad.npz")
    n = 12
    np.savez(tmp_path / "ok.npz", images=np.zeros((n, 1, 12, 12)), labels=np.arange(n) % 2, groups=(np.arange(n) // 2) % 2,
             clients=np.zeros(n, int), split=np.arange(n) % 3, class_names=np.array(["smiling", "frowning"]),
             group_names=np.array(["young", "old"]))
    fed, cn, gn = load_npz_federation(tmp_path / "ok.npz")
    assert cn == ("smiling", "frowning") and len(fed.clients) == 1 and len(fed.test) == 4


def test_method_flags_cover_ablations() -> None:
    assert FLAGS["fvlfp"].cdfp and FLAGS["fvlfp"].dsop and FLAGS["fvlfp"].fpf
    for comp in ("cdfp", "dsop", "fpf"):
        assert not getattr(FLAGS[f"fvlfp_no_{comp}"], comp)


def test_own_clip_and_data_end_to_end(tmp_path) -> None:
    from trustlab.runner import run_system

    clip = tmp_path / "clip"
    clip.mkdir()
    _tiny_hf_clip(clip)
    rng = np.random.default_rng(0)
    n = 48
    np.savez(tmp_path / "own.npz", images=rng.normal(size=(n, 3, 16, 16)).astype(np.float32),
             labels=np.arange(n) % 2, groups=(np.arange(n) // 2) % 2, clients=np.arange(n) % 2,
             split=(np.arange(n) // 2) % 3, class_names=np.array(["smiling", "frowning"]),
             group_names=np.array(["young", "old"]))
    rec, _ = run_system("fvlfp", "smoke", out=tmp_path / "run",
                        overrides=[f"backbone={clip}", f"data_path={tmp_path / 'own.npz'}", "rounds=1", "local_steps=1",
                                   "methods=[zero_shot,promptfl,fvlfp]"])
    assert {r["method"] for r in rec.rows} == {"zero_shot", "promptfl", "fvlfp"}
    assert all(0.0 <= r["dp_diff"] <= 1.0 for r in rec.rows)


# ------------------------------------------------------------------------------------ issue 21 additions
def _small_feats(seed: int = 0):  # noqa: ANN202 - features of a random (untrained) tiny CLIP, fast
    from trustlab.data.fair_vl import FairVLSpec
    from trustlab.systems.fvlfp.data import synthetic_federation
    from trustlab.systems.fvlfp.experiment import encode
    from trustlab.systems.fvlfp.pretrain import _vocab_for

    spec = FairVLSpec()
    torch.manual_seed(0)
    bb = TinyCLIP(TinyCLIPConfig(vocab=_vocab_for(spec), image_size=spec.image_size))
    fed = synthetic_federation(spec, [0.9, 0.5, 0.8], 40, 20, 20, 60, seed)
    feats = {"test": encode(bb, fed.test),
             "clients": [{s: encode(bb, getattr(c, s)) for s in ("train", "val", "test")} for c in fed.clients]}
    return bb, feats, spec


def test_feature_manifest_roundtrip_and_errors(tmp_path) -> None:
    from trustlab.systems.fvlfp.data import export_feature_manifest, load_feature_manifest

    bb, feats, spec = _small_feats()
    man = export_feature_manifest(tmp_path / "f", feats, spec.class_names, spec.group_names)
    got, cn, gn = load_feature_manifest(man, embed_dim=feats["test"][0].shape[1])
    assert cn == spec.class_names and gn == spec.group_names and len(got["clients"]) == 3
    for a, b in zip(got["clients"][1]["val"], feats["clients"][1]["val"], strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with pytest.raises(UserError, match="dimensions"):
        load_feature_manifest(man, embed_dim=7)
    with pytest.raises(UserError, match="does not exist"):
        load_feature_manifest(tmp_path / "nope.json")
    (tmp_path / "f" / "client_0.npy").unlink()
    with pytest.raises(UserError, match="client_0.npy"):
        load_feature_manifest(man)


def test_partial_world_keeps_aligned_patterns_and_adds_an_unnamed_signal() -> None:
    from trustlab.data.fair_vl import FairVLSpec, make_world, sample_batch

    aligned, partial = make_world(FairVLSpec()), make_world(FairVLSpec(text_alignment=0.5))
    assert np.array_equal(aligned.group_patterns, partial.group_patterns)
    xa = sample_batch(aligned, 400, 0.5, np.random.default_rng(0)).images.numpy().reshape(400, -1)
    xp = sample_batch(partial, 400, 0.5, np.random.default_rng(0)).images.numpy().reshape(400, -1)
    g = aligned.group_patterns.reshape(2, -1)
    h = partial.hidden_group_patterns.reshape(2, -1)
    named = lambda x: float(np.abs(x @ (g[0] - g[1])).mean())  # noqa: E731
    hidden = lambda x: float(np.abs(x @ (h[0] - h[1])).mean())  # noqa: E731
    assert named(xp) < named(xa)  # less of the demographic signal lies on the caption-named pattern
    assert hidden(xp) > hidden(xa)


def test_tiny_clip_no_longer_imports_trustlab_data() -> None:
    import subprocess
    import sys

    code = "import sys, trustlab.models.tiny_clip; print(sorted(m for m in sys.modules if m.startswith('trustlab.data')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_qffl_equals_flowers_qfedavg_step() -> None:
    from flwr.serverapp.strategy.qfedavg import compute_delta_and_h

    from trustlab.systems.fvlfp.baselines import qffl_aggregate

    rng = np.random.default_rng(0)
    w = [rng.normal(size=(4, 3))]
    locals_ = [[w[0] + rng.normal(scale=0.1, size=(4, 3))] for _ in range(5)]
    losses = rng.uniform(0.2, 2.0, 5)
    q, lr = 1.5, 0.1
    sum_d, sum_h = 0, 0.0
    for lw, f in zip(locals_, losses, strict=True):
        d, h = compute_delta_and_h([w[0].copy()], [lw[0].copy()], q, 1 / lr, float(f))
        sum_d, sum_h = sum_d + d[0], sum_h + h
    ref = w[0] - sum_d / sum_h
    u = np.stack([lw[0].ravel() - w[0].ravel() for lw in locals_])
    ours = w[0].ravel() + qffl_aggregate(u, losses, q, 1 / lr).update
    np.testing.assert_allclose(ours, ref.ravel(), rtol=1e-6)
    fedavg = w[0].ravel() + u.mean(0)
    assert not np.allclose(ours, fedavg, rtol=1e-3)  # q-FFL is not FedAvg


def test_fed_fvlfp_saves_prompts_that_reload_to_the_reported_metrics(tmp_path) -> None:
    from trustlab.cli import main
    from trustlab.systems.fvlfp.config import Config
    from trustlab.systems.fvlfp.data import export_feature_manifest, load_feature_manifest
    from trustlab.systems.fvlfp.experiment import load_backbone
    from trustlab.systems.fvlfp.fed import load_prompts
    from trustlab.systems.fvlfp.method import evaluate_global
    from trustlab.utils.io import read_json

    cfg = Config.for_scale("quick")
    backbone, _ = load_backbone(cfg, torch.device("cpu"))
    from trustlab.systems.fvlfp.data import synthetic_federation
    from trustlab.systems.fvlfp.experiment import encode, world_spec

    fed = synthetic_federation(world_spec(cfg), [0.95, 0.5, 0.9], 60, 30, 30, 200, 0)
    feats = {"test": encode(backbone, fed.test),
             "clients": [{s: encode(backbone, getattr(c, s)) for s in ("train", "val", "test")} for c in fed.clients]}
    man = export_feature_manifest(tmp_path / "feats", feats, world_spec(cfg).class_names, world_spec(cfg).group_names)
    rc = main(["fed", "fvlfp", "--engine", "flower-inline", "--features", str(man), "--rounds", "2",
               "--fraction-fit", "0.7", "--out", str(tmp_path / "run")])
    assert rc == 0
    res = read_json(tmp_path / "run" / "results.json")
    learner, dsop = load_prompts(tmp_path / "run", backbone)
    assert dsop and learner.deep
    test = load_feature_manifest(man)[0]["test"]
    again = evaluate_global(backbone, learner, *test, dsop)
    assert again["acc"] == pytest.approx(res["metrics"]["acc"]) and again["dp_diff"] == pytest.approx(res["metrics"]["dp_diff"])
    assert {r["group"] for r in res["group_table"]} == {"young", "old", "overall"}
    assert main(["fed", "fvlfp", "--world", "nowhere", "--out", str(tmp_path / "x")]) == 2
    assert main(["fed", "fvlfp", "--features", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")]) == 2


def test_fair_server_strategies_are_not_fedavg() -> None:
    from trustlab.federated import FedAvg, FitReply
    from trustlab.systems.fvlfp.baselines import FairFedStrategy, QFFLStrategy
    from trustlab.systems.fvlfp.method import FPFStrategy, counts_to_metrics

    theta = [np.zeros(3)]
    rng = np.random.default_rng(0)
    fair, unfair = np.zeros((2, 2, 2)), np.zeros((2, 2, 2))
    fair[:, 0, 0] = fair[:, 1, 1] = 10  # both groups perfectly classified
    unfair[0, 0, 0] = unfair[0, 1, 0] = unfair[1, 0, 1] = unfair[1, 1, 1] = 10  # predicts the group
    replies = [FitReply(i, [rng.normal(size=3)], 10,
                        {"acc": 0.8, "cf_gap": 0.4 * i, "eo_diff": 0.4 * i, "train_loss_before": 1.0 + i,
                         **counts_to_metrics(fair if i == 0 else unfair)}) for i in range(3)]
    ref, _ = FedAvg().aggregate_train(1, theta, replies)
    for s in (FPFStrategy(), FairFedStrategy(beta=1.0), QFFLStrategy(q=1.0, lr=0.1)):
        new, info = s.aggregate_train(1, theta, replies)
        assert not np.allclose(new[0], ref[0], atol=1e-3), type(s).__name__
    assert FPFStrategy().aggregate_train(1, theta, replies)[1]["weights"][0] > 0.9  # the fair client leads


def test_run_accepts_a_feature_manifest(tmp_path) -> None:
    from trustlab.runner import run_system
    from trustlab.systems.fvlfp.data import export_feature_manifest

    _, feats, spec = _small_feats()
    man = export_feature_manifest(tmp_path / "f", feats, spec.class_names, spec.group_names)
    rec, _ = run_system("fvlfp", "quick", out=tmp_path / "run", device="cpu",
                        overrides=[f"features_path={man}", "methods=[promptfl]", "rounds=1"])
    assert rec.rows[0]["method"] == "promptfl" and 0.0 <= rec.rows[0]["acc"] <= 1.0
    assert sum(r["count"] for r in rec.extra["group_table"]["promptfl/seed=0"][:-1]) == len(feats["test"][1])
