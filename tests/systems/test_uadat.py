"""UAD-AT: component maths, baselines, data loaders, ART AutoAttack on our model, and the smoke run."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trustlab.data.images import (
    find_fashion_mnist,
    load_cifar10,
    load_digits_images,
    load_fashion_mnist,
    read_idx,
)
from trustlab.errors import UserError
from trustlab.models.resnet import PreActResNet
from trustlab.models.small_cnn import SmallCNN
from trustlab.systems.uadat.baselines import MART, TRADES, mart_loss, trades_loss
from trustlab.systems.uadat.config import Config
from trustlab.systems.uadat.method import (
    UADAT,
    channel_stats,
    class_mean_weights,
    gaussian_w2,
    gradient_alignment_loss,
    nearest_reference_index,
    proximity_weights,
    refined_reference,
    swap_reference,
    uncertainty_resample,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=16)
    x = torch.rand(12, 1, 28, 28)
    y = torch.arange(12) % 10
    return model, x, y


# -- gradient alignment -------------------------------------------------------------------------------
def test_gradient_alignment_zero_when_domains_coincide(tiny):
    g = torch.randn(5, 1, 28, 28)
    assert float(gradient_alignment_loss(g, g)) == pytest.approx(0.0, abs=1e-6)
    assert float(gradient_alignment_loss(g, -g)) == pytest.approx(2.0, abs=1e-6)
    model, x, y = tiny
    model.train()
    # x_adv == x, no resampling, own reference: IGA, feature W2 and the matching KL all vanish
    t = {k: v.detach() for k, v in
         UADAT(eps=0.1, steps=1, uncertainty=False, reference=False).terms(model, x, y, x.clone()).items()}
    assert float(t["iga"]) == pytest.approx(0.0, abs=1e-5)
    assert float(t["w2"]) == pytest.approx(0.0, abs=1e-8)
    assert float(t["match"]) == pytest.approx(0.0, abs=1e-6)
    assert float(t["total"]) == pytest.approx(float(t["ce"]), rel=1e-5)
    t2 = UADAT(eps=0.1, steps=1, uncertainty=False).terms(model, x, y, (x + 0.05).clamp(0, 1))
    assert float(t2["iga"].detach()) > 1e-3


def test_all_components_off_is_exactly_trades(tiny):
    model, x, y = tiny
    model.train()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    m = UADAT(eps=0.1, steps=1, beta=6.0, uncertainty=False, reference=False, d2d=False, iga=False)
    ours = m.terms(model, x, y, x_adv)["total"]
    ref = trades_loss(model(x), model(x_adv), y, 6.0)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


def test_uncertainty_resampling_hits_drawn_statistics():
    torch.manual_seed(1)
    z = torch.randn(8, 3, 5, 5) * 2 + 1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    zt = uncertainty_resample(z, g1)
    # redraw the same noise to get the target statistics
    mu, sig = channel_stats(z)
    s_mu, s_sig = (mu.var(0, keepdim=True) + 1e-6).sqrt(), (sig.var(0, keepdim=True) + 1e-6).sqrt()
    mu_t = mu + torch.randn(mu.shape, generator=g2) * s_mu
    sig_t = sig + torch.randn(sig.shape, generator=g2) * s_sig
    mu_o, sig_o = channel_stats(zt, eps=0.0)
    assert torch.allclose(mu_o, mu_t, atol=1e-5)
    assert torch.allclose(sig_o, sig_t.abs(), atol=1e-3)
    assert not torch.allclose(zt, z)


def test_reference_refinement_avoids_misclassified_clean_examples():
    mu = torch.tensor([[0.0], [1.0], [5.0], [1.1], [9.0]])
    sig = torch.ones(5, 1)
    y = torch.tensor([0, 0, 0, 1, 2])
    correct = torch.tensor([True, False, True, True, False])
    # 1 is wrong -> nearest correct same-class sample is 0 (not 3: other class); 4 has none
    assert nearest_reference_index(mu, sig, y, correct).tolist() == [0, 0, 2, 3, 4]
    idx = nearest_reference_index(mu, sig, y, correct, fallback="onehot")
    assert idx.tolist() == [0, 0, 2, 3, -1]
    p = F.softmax(torch.randn(5, 3), 1)
    ref = refined_reference(p, torch.tensor([0, 0, 0, 1, 2]), idx, smoothing=0.1)
    assert torch.allclose(ref[1], p[0]) and torch.allclose(ref[0], p[0])
    assert torch.allclose(ref[4], torch.tensor([0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]))
    assert torch.allclose(ref.sum(1), torch.ones(5))


def test_proximity_reference_borrows_only_from_correct_same_class_examples():
    mu = torch.tensor([[0.0], [1.0], [5.0], [1.1], [9.0]])
    sig = torch.ones(5, 1)
    y = torch.tensor([0, 0, 0, 1, 2])
    correct = torch.tensor([True, False, True, True, False])
    w, own = proximity_weights(mu, sig, y, correct)
    assert own.tolist() == [True, False, True, True, True]  # 4 has no correct same-class neighbour
    assert torch.allclose(w[1].sum(), torch.tensor(1.0))
    assert float(w[1, 1]) == 0.0 and float(w[1, 3]) == 0.0  # never itself (wrong), never another class
    assert float(w[1, 0]) > float(w[1, 2]) > 0.0  # nearer in statistics -> larger weight


def test_mask_reference_drops_misclassified_examples_from_the_alignment(tiny):
    model, x, y = tiny
    model.train()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    kw = dict(eps=0.1, steps=1, beta=6.0, uncertainty=False, d2d=True, iga=False)
    with torch.no_grad():
        correct = model(x).argmax(1) == y  # same batch statistics as in terms() (train mode)
    assert 0 < int(correct.sum()) < len(y)
    t = UADAT(**kw, ref_mode="mask").terms(model, x, y, x_adv)
    keep = correct.float()
    logits_adv = model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(model(x), 1), reduction="none").sum(1)
    assert float(t["match"].detach()) == pytest.approx(float((kl * keep).mean().detach()), rel=1e-5)
    # misclassified samples only: nothing is aligned at all
    t0 = UADAT(**kw, ref_mode="mask").terms(model, x[~correct], y[~correct], x_adv[~correct])
    assert float(t0["match"].detach()) == 0.0 and float(t0["w2"].detach()) == 0.0


def test_inverse_reference_stays_near_clean_and_lowers_the_loss(tiny):
    model, x, y = tiny
    m = UADAT(eps=0.1, steps=3, alpha=0.04, ref_mode="inverse", uncertainty=False, iga=False)
    model.train()
    x_inv = m.inverse_adversary(model, x, y)
    assert model.training  # mode restored
    assert float((x_inv - x).abs().max()) <= 0.1 + 1e-6 and float(x_inv.min()) >= 0 and float(x_inv.max()) <= 1
    model.eval()
    with torch.no_grad():
        assert float(F.cross_entropy(model(x_inv), y)) < float(F.cross_entropy(model(x), y))
    model.train()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    t = m.terms(model, x, y, x_adv, x_inv=x_inv)
    assert torch.isfinite(t["total"]) and float(t["match"].detach()) > 0


def test_class_mean_reference_averages_correct_examples_of_the_true_class():
    y = torch.tensor([0, 0, 0, 1, 2])
    correct = torch.tensor([True, False, True, True, False])
    w, own = class_mean_weights(torch.zeros(5, 1), torch.ones(5, 1), y, correct)
    assert own.tolist() == [True, False, True, True, True]
    assert w[1].tolist() == [0.5, 0.0, 0.5, 0.0, 0.0]


def test_swap_reference_relabels_misclassified_predictions_without_changing_their_shape():
    p = torch.softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(3)), dim=1).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    y[0] = int(p[0].argmax())  # one correctly classified sample: its reference is its own prediction
    ref = swap_reference(p, y)
    assert ref.argmax(1).tolist() == y.tolist()
    assert torch.allclose(ref[0], p[0])
    assert torch.allclose(ref.sort(1).values, p.sort(1).values)  # same probabilities, permuted
    ref.sum().backward()  # stays in the graph (the clean side keeps TRADES' gradient)
    assert p.grad is not None


def test_blend_reference_is_half_own_half_class_mean(tiny):
    model, x, y = tiny
    model.eval()
    x_adv = (x + 0.05).clamp(0, 1)
    kw = dict(eps=0.1, steps=1, uncertainty=False, d2d=False, iga=False)
    for mode in ("swap", "blend"):
        t = UADAT(**kw, ref_mode=mode).terms(model, x, y, x_adv)
        assert torch.isfinite(t["total"])
    z = model.stem(x)
    logits = model.tail(z)
    p = F.softmax(logits, 1)
    mu, sig = channel_stats(z)
    m = UADAT(**kw, ref_mode="blend")
    ref = m._reference(model, x, y, logits, p, mu, sig, None)[0]
    correct = logits.argmax(1) == y
    w, own = class_mean_weights(mu, sig, y, correct)
    expect = torch.where(own[:, None], p, 0.5 * (p + w @ p))
    assert torch.allclose(ref, expect, atol=1e-6)


def test_adversarial_ce_term_adds_expected_adversarial_loss(tiny):
    model, x, y = tiny
    model.train()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    off = dict(eps=0.1, steps=1, beta=6.0, uncertainty=False, reference=False, d2d=False, iga=False)
    t = UADAT(**off, adv_ce=0.5).terms(model, x, y, x_adv)
    ref = trades_loss(model(x), model(x_adv), y, 6.0) + 0.5 * F.cross_entropy(model(x_adv), y)
    assert float(t["total"].detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    with pytest.raises(ValueError):
        UADAT(ref_mode="farthest")


def test_w2_is_zero_iff_equal_and_validation():
    mu, sig = torch.rand(4, 3), torch.rand(4, 3) + 0.1
    assert float(gaussian_w2(mu, sig, mu, sig)) == 0.0
    assert float(gaussian_w2(mu, sig, mu + 1, sig)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        UADAT(p=1.5)
    with pytest.raises(ValueError):
        UADAT.without("nothing")
    assert UADAT.without("iga").iga is False


def test_baseline_losses_hand_values():
    lc = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    la = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    pc, pa = F.softmax(lc, 1), F.softmax(la, 1)
    kl = (pc * (pc.log() - pa.log())).sum(1)
    assert float(trades_loss(lc, la, y, 6.0)) == pytest.approx(float(F.cross_entropy(lc, y) + 6 * kl.mean()), rel=1e-5)
    other = torch.tensor([1, 2])  # most likely wrong class under p_adv
    bce = -pa[[0, 1], y].log() - (1.0001 - pa[[0, 1], other]).log()
    mart = bce.mean() + 6 * (kl * (1.0000001 - pc[[0, 1], y])).mean()
    assert float(mart_loss(lc, la, y, 6.0)) == pytest.approx(float(mart), rel=1e-4)


def test_training_losses_are_finite_and_backpropagate(tiny):
    model, x, y = tiny
    model.train()
    for m in (TRADES(0.1, 1), MART(0.1, 1), UADAT(0.1, 1, p=1.0)):
        model.zero_grad()
        loss = m.loss(model, x, y, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    r = PreActResNet(1, 10, blocks=(1, 1), widths=(4, 8))
    r.train()
    assert torch.isfinite(UADAT(0.1, 1, p=1.0).loss(r, x, y))


# -- ART AutoAttack on our model ----------------------------------------------------------------------
def test_art_autoattack_runs_on_our_model(tiny):
    pytest.importorskip("art")
    from trustlab.metrics.classification import correct_mask
    from trustlab.systems.uadat.evaluation import AAConfig, art_autoattack, art_pgd_accuracy

    model, x, y = tiny
    model.eval()
    out = art_autoattack(model, x, y, AAConfig(eps=0.1, apgd_iters=3, square_queries=5, batch_size=16))
    assert 0.0 <= out["acc"] <= 1.0 and len(out["robust"]) == len(y) and len(out["best_attacks"]) == len(y)
    assert out["max_linf"] <= 0.1 + 1e-5
    clean = correct_mask(model, x, y)
    assert all(c or not r for c, r in zip(clean.tolist(), out["robust"], strict=True))  # robust => clean-correct
    acc = art_pgd_accuracy(model, x, y, eps=0.1, alpha=0.025, steps=3)
    assert 0.0 <= acc <= float(clean.float().mean())


# -- data ---------------------------------------------------------------------------------------------
def _write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_and_fashion_loader_on_fake_folder(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (6, 28, 28))
    labels = np.arange(6) % 10
    for _split, (a, b) in {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}.items():
        _write_idx(tmp_path / a, imgs)
        _write_idx(tmp_path / b, labels)
    d = load_fashion_mnist("test", tmp_path)
    assert d.x.shape == (6, 1, 28, 28) and d.x.max() <= 1.0 and d.y.tolist() == labels.tolist()
    assert np.array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(UserError):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(UserError):
        load_fashion_mnist("valid", tmp_path)


def test_real_fashion_mnist_when_installed():
    if find_fashion_mnist() is None:
        pytest.skip("Debian package dataset-fashion-mnist not installed (digits fallback tested separately)")
    d = load_fashion_mnist("test")
    assert d.x.shape == (10000, 1, 28, 28) and torch.bincount(d.y).tolist() == [1000] * 10


def test_digits_fallback(monkeypatch):
    import trustlab.systems.uadat.data as data_mod

    monkeypatch.setattr(data_mod, "find_fashion_mnist", lambda: None)
    cfg = Config(n_train=100, n_test=50)
    splits = data_mod.load_splits(cfg)
    assert splits.train.card.name == "sklearn-digits" and splits.train.x.shape[1:] == (1, 28, 28)
    assert len(splits.train) == 100 and len(splits.test) == 50 and any("fell back" in n for n in splits.notes)
    assert load_digits_images(28).x.max() <= 1.0
    cfg.fallback_to_digits = False
    with pytest.raises(UserError):
        data_mod.load_splits(cfg)


def test_cifar10_folder_loader_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    d = load_cifar10(tmp_path, "train")
    assert d.x.shape == (20, 3, 32, 32) and d.y.tolist()[:4] == [0, 1, 2, 9]
    with pytest.raises(UserError, match="does not exist"):
        load_cifar10(tmp_path / "nope")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": print}))  # a global that is refused
    with pytest.raises(UserError, match="not a CIFAR-10"):
        load_cifar10(tmp_path, "test")


def test_config_validation():
    with pytest.raises(UserError):
        Config(methods=["uadat", "bogus"]).validate()
    with pytest.raises(UserError):
        Config(dataset="cifar10").validate()
    with pytest.raises(UserError, match="n_art_pgd"):
        Config(n_art_pgd=-1).validate()
    assert Config().art_pgd_points == 200 and Config(n_art_pgd=0).art_pgd_points == Config().n_aa
    assert Config(n_aa=50).art_pgd_points == 50
    for scale in ("smoke", "quick", "default", "paper"):
        Config.for_scale(scale).validate()
    assert Config.for_scale("paper").autoattack == "standard" and Config.for_scale("paper").aa_metric == "aa_acc"
    assert Config().aa_metric == "aa_reduced_acc"


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST (Debian package) not installed")
def test_validation_split_is_disjoint_and_from_the_training_file():
    from trustlab.config import apply_overrides, parse_set
    from trustlab.systems.uadat.validation import main, validation_splits

    cfg = Config(n_train=200, n_test=100)
    sp = validation_splits(cfg, perm_seed=123)
    assert len(sp.train) == 200 and len(sp.test) == 100
    assert "training file" in sp.test.card.notes and "split train" in sp.test.card.source
    # no image of the validation split is also a training image
    flat_tr, flat_va = sp.train.x.flatten(1), sp.test.x.flatten(1)
    assert not any(bool((flat_tr == v).all(1).any()) for v in flat_va[:20])
    over = apply_overrides(Config(), parse_set(["n_train=3000", "uadat_ref_mode=mask"]))
    assert (over.n_train, over.uadat_ref_mode) == (3000, "mask")
    assert main(["--set", "bogus=1"]) == 2  # one-line error, exit code 2


# -- the smoke-scale run ------------------------------------------------------------------------------
def test_smoke_run_orders_adversarial_training_above_standard(tmp_path):
    from trustlab.runner import run_system

    rec, out = run_system("uadat", "smoke", out=tmp_path, seeds=[0], device="cpu")
    assert (out / "results.json").is_file()
    methods = {s["method"] for s in rec.summary}
    assert {"standard", "pgd_at", "trades", "uadat"} <= methods
    for m in methods:
        for k in ("nat_acc", "pgd_acc", "aa_reduced_acc"):
            assert 0.0 <= rec.mean(m, k) <= 1.0
        assert rec.mean(m, "aa_reduced_acc") <= rec.mean(m, "pgd_acc_aa_subset") + 1e-9 + 0.1
    assert rec.extra["autoattack_name"] == "aa_reduced" and "aa_acc" not in rec.rows[0]  # reduced keeps its name
    assert (out / "plots" / "robust_vs_clean.png").is_file()
    # the paper's (and every AT paper's) basic ordering: adversarial training is more robust than ERM
    assert rec.mean("pgd_at", "pgd_acc") > rec.mean("standard", "pgd_acc")
    assert rec.mean("uadat", "pgd_acc") > rec.mean("standard", "pgd_acc")
    ids = {c["id"] for c in rec.claims}
    assert {"C1", "C2", "X1", "X2", "X3"} <= ids


def test_models_split_into_stem_and_tail_and_validate():
    x = torch.rand(3, 3, 32, 32)
    for m in (SmallCNN(3, 10, width=4, image_size=32), PreActResNet(3, 10, blocks=(1, 1), widths=(4, 8))):
        m.eval()
        with torch.no_grad():
            assert torch.allclose(m(x), m.tail(m.stem(x))) and m(x).shape == (3, 10)
    with pytest.raises(ValueError):
        SmallCNN(image_size=30)
    # channels-last memory order is the same network: same weights give the same logits and input gradients
    torch.manual_seed(0)
    a, b = SmallCNN(3, 10, width=4, image_size=32, channels_last=False), SmallCNN(3, 10, width=4, image_size=32)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = a(xa), b(xb)
    assert torch.allclose(la, lb, atol=1e-5)
    la.sum().backward(), lb.sum().backward()
    assert xa.grad is not None and xb.grad is not None and torch.allclose(xa.grad, xb.grad, atol=1e-5)
    with pytest.raises(ValueError):
        PreActResNet(blocks=(1, 1), widths=(4,))
