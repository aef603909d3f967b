"""UAD-AT as a tool: robust-train / robust-eval (save, reload, bad input), PreAct ResNet-18, AutoAttack, protocol."""

from __future__ import annotations

import copy
import json
import shlex

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trustlab.cli import main
from trustlab.models.resnet import PreActResNet, preact_resnet18
from trustlab.models.small_cnn import SmallCNN


def templated(n: int, k: int = 4, seed: int = 0, spread: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 28x28 images: class templates that differ by < 0.1 per pixel, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    templ = torch.rand(k, 1, 28, 28, generator=torch.Generator().manual_seed(123)) * spread
    y = torch.arange(n) % k
    x = (0.45 + templ[y] + 0.01 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory):
    xtr, ytr = templated(48, seed=0)
    xte, yte = templated(16, seed=1)
    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    np.savez(path, x_train=(xtr.squeeze(1).numpy() * 255).round().astype(np.uint8), y_train=ytr.numpy(),
             x_test=(xte.squeeze(1).numpy() * 255).round().astype(np.uint8), y_test=yte.numpy())
    return path


@pytest.fixture(scope="module")
def undefended():
    """A linear classifier trained by plain ERM on templated data: accurate, and broken well within eps = 0.1."""
    x, y = templated(64)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(60):
        m.train()
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), x, y


# -- robust-train / robust-eval ------------------------------------------------------------------------
def test_robust_train_saves_a_model_that_reloads_identically(tmp_path, npz_file):
    from trustlab.systems.uadat.tool import fit_model, load_model, save_model

    model, spec, report = fit_model(f"npz:{npz_file}", "small_cnn", "uadat", epochs=1, steps=1, batch_size=16,
                                    device="cpu")
    save_model(model, spec, report, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.safetensors", "model.json", "train_report.json"}
    loaded, spec2 = load_model(tmp_path)
    x, _ = templated(8, seed=5)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert spec2["method"] == "uadat" and spec2["method_settings"]["uadat_adv_ce"] == 0.0  # the abstract's kappa
    assert spec2["input_shape"] == [1, 28, 28] and spec2["num_classes"] == 4
    fresh = SmallCNN(**spec2["arch_kwargs"])
    assert not torch.equal(fresh.state_dict()["stem.1.weight"], loaded.state_dict()["stem.1.weight"])


def test_cli_train_then_eval_writes_reports(tmp_path, npz_file):
    d = tmp_path / "model"
    assert main(["robust-train", "--data", f"npz:{npz_file}", "--arch", "small_cnn", "--method", "trades",
                 "--epochs", "1", "--steps", "1", "--batch-size", "16", "--device", "cpu", "--out", str(d)]) == 0
    assert json.loads((d / "model.json").read_text())["method"] == "trades"
    assert main(["robust-eval", "--model", str(d), "--data", f"npz:{npz_file}", "--attack", "reduced",
                 "--limit", "8", "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    rep = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert rep["n"] == 8 and rep["autoattack"] == "aa_reduced" and "aa_reduced_acc" in rep and "aa_acc" not in rep
    assert 0.0 <= rep["aa_reduced_acc"] <= rep["pgd20_acc"] + 0.25 and rep["aa_reduced_acc"] <= rep["nat_acc"]


def test_user_factory_architecture(tmp_path, npz_file, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def linear(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))\n"
        "def wrong():\n    return nn.Linear(3, 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from trustlab.systems.uadat.tool import load_model

    d = tmp_path / "m"
    args = ["robust-train", "--data", f"npz:{npz_file}", "--epochs", "1", "--steps", "1", "--device", "cpu"]
    assert main([*args, "--arch", "my_nets:linear", "--method", "pgd_at", "--out", str(d)]) == 0
    model, spec = load_model(d)
    assert spec["arch"] == "my_nets:linear" and spec["arch_kwargs"] == {"num_classes": 4, "in_channels": 1}
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)
    # UAD-AT needs stem/tail; a factory whose model does not fit the data is refused
    assert main([*args, "--arch", "my_nets:linear", "--method", "uadat", "--out", str(tmp_path / "u")]) == 2
    assert main([*args, "--arch", "my_nets:wrong", "--out", str(tmp_path / "w")]) == 2


def test_bad_input_is_one_line_exit_2(tmp_path, npz_file, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 28, 28), np.uint8))
    hot = tmp_path / "hot.npz"
    np.savez(hot, x=np.full((4, 28, 28), 2.0, np.float32), y=np.arange(4))
    base = ["robust-train", "--epochs", "1", "--out", str(tmp_path / "o")]
    for extra in (["--data", "bogus"], ["--data", f"npz:{tmp_path / 'none.npz'}"], ["--data", f"npz:{bad}"],
                  ["--data", f"npz:{hot}"], ["--data", "cifar10"], ["--data", f"cifar10:{tmp_path / 'nope'}"],
                  ["--data", f"npz:{npz_file}", "--method", "fgsm"], ["--data", f"npz:{npz_file}", "--arch", "resnet"],
                  ["--data", f"npz:{npz_file}", "--arch", "no_such_module:f"],
                  ["--data", f"npz:{npz_file}", "--eps", "3"], ["--data", f"npz:{npz_file}", "--limit", "1"],
                  ["--data", f"npz:{npz_file}", "--set", "trades_beta"]):
        capsys.readouterr()
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "o").exists()  # nothing written before the inputs were checked
    assert main(["robust-eval", "--model", str(tmp_path), "--data", "demo", "--out", str(tmp_path / "e")]) == 2
    # a model trained on 28x28 grey images cannot be evaluated on other shapes / more classes
    d = tmp_path / "m"
    assert main(["robust-train", "--data", f"npz:{npz_file}", "--epochs", "1", "--steps", "1", "--method",
                 "standard", "--device", "cpu", "--out", str(d)]) == 0
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    assert main(["robust-eval", "--model", str(d), "--data", f"npz:{rgb}", "--out", str(tmp_path / "e")]) == 2
    assert main(["robust-eval", "--model", str(d), "--data", "demo", "--out", str(tmp_path / "e")]) == 2  # 10 > 4
    assert main(["robust-eval", "--model", str(d), "--data", f"npz:{npz_file}", "--attack", "lite",
                 "--out", str(tmp_path / "e")]) == 2


def test_system_demo_commands_run(tmp_path):
    from trustlab.systems.uadat import SYSTEM

    assert SYSTEM.key_figure == "robust_vs_clean.png" and len(SYSTEM.demo) == 2
    for i, cmd in enumerate(SYSTEM.demo):  # as `trustlab demo` runs them: one {out} folder per invocation
        out = tmp_path / f"verb-{i}"
        assert main(shlex.split(cmd.replace("{out}", str(out))) + ["--device", "cpu"]) == 0, cmd
    rep = json.loads((tmp_path / "verb-1" / "eval_report.json").read_text())
    assert rep["n"] == 64 and rep["trained_with"]["method"] == "uadat"


# -- architectures -------------------------------------------------------------------------------------
def test_preact_resnet18_is_the_real_one():
    m = preact_resnet18(3, 10)
    stages = [m.stem[2], *list(m.tail)[:-1]]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert [s[-1].conv2.out_channels for s in stages] == [64, 128, 256, 512]
    # Kuang Liu's CIFAR PreActResNet18 has 11,171,146 parameters; ours adds the final BN (2 x 512) before pooling
    assert sum(p.numel() for p in m.parameters()) == 11_171_146 + 2 * 512
    m.eval()
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32)
        assert torch.allclose(m(x), m.tail(m.stem(x))) and m(x).shape == (2, 10)


def test_arch_resnet_was_renamed():
    from trustlab.errors import UserError
    from trustlab.systems.uadat.config import Config
    from trustlab.systems.uadat.experiment import build_model

    with pytest.raises(UserError, match="preact_resnet8"):
        Config(arch="resnet").validate()
    m = build_model(Config(arch="preact_resnet8", width=4), 1, 28)
    assert isinstance(m, PreActResNet) and m.spec["blocks"] == [1, 1, 1] and m.spec["widths"] == [4, 8, 16]


# -- AutoAttack ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("composition", ["standard", "reduced"])
def test_autoattack_breaks_an_undefended_model(undefended, composition):
    """An AutoAttack that returned the clean input would leave the accuracy at the clean accuracy (>= 0.9)."""
    pytest.importorskip("art")
    from trustlab.metrics.classification import natural_accuracy
    from trustlab.systems.uadat.evaluation import AAConfig, art_autoattack

    model, x, y = undefended
    clean = natural_accuracy(model, x, y)
    assert clean >= 0.9
    cfg = AAConfig(0.1, 5, 1, 20, 64, composition, 3)
    out = art_autoattack(model, x, y, cfg, nb_classes=4, seed=0)
    assert out["acc"] <= 0.1 and 0.0 < out["max_linf"] <= 0.1 + 1e-5
    assert out["name"] == {"standard": "aa_standard_nofab", "reduced": "aa_reduced"}[composition]
    assert sum(b >= 0 for b in out["best_attacks"]) >= 0.9 * len(y)  # points broken by a named attack run


def test_standard_composition_budgets_and_targets(undefended):
    pytest.importorskip("art")
    from trustlab.systems.uadat.evaluation import AAConfig, art_autoattack, standard_composition

    cfg = AAConfig.standard(8 / 255)
    assert (cfg.apgd_iters, cfg.apgd_restarts, cfg.n_targets, cfg.square_queries) == (100, 1, 9, 5000)
    assert cfg.metric == "aa_acc" and "no FAB-T" in cfg.describe()
    assert AAConfig(0.1).metric == "aa_reduced_acc"
    # with APGD-CE unable to move (eps tiny), the targeted runs and Square still run, each on what is left
    model, x, y = undefended
    out = art_autoattack(model, x[:8], y[:8], AAConfig(1e-4, 2, 1, 3, 8, "standard", 3), nb_classes=4)
    assert out["attack_runs"] == ["APGD-CE", "APGD-T(target rank 2)", "APGD-T(target rank 3)",
                                  "APGD-T(target rank 4)", "Square"]
    assert out["acc"] == pytest.approx(1.0) and out["max_linf"] <= 1e-4 + 1e-6
    assert callable(standard_composition)


# -- protocol -----------------------------------------------------------------------------------------------
def _batch():
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=16)
    x = torch.rand(12, 1, 28, 28)
    y = torch.arange(12) % 10
    return model, x, y


def test_uadat_with_every_component_off_equals_trades_at_the_shipped_kappa():
    from trustlab.systems.uadat.baselines import TRADES
    from trustlab.systems.uadat.config import Config
    from trustlab.systems.uadat.experiment import build_method

    cfg = Config()
    assert cfg.uadat_adv_ce == 0.0  # the shipped uadat row is the abstract's method: no adversarial CE term
    model, x, y = _batch()
    model.train()
    u = build_method("uadat", cfg)
    u.uncertainty = u.reference = u.d2d = u.iga = False
    t = build_method("trades", cfg)
    assert isinstance(t, TRADES) and (u.eps, u.steps, u.alpha, u.beta) == (t.eps, t.steps, t.alpha, t.beta)
    # same weights and BN statistics (train-mode passes update them) and the same attack randomness
    lu = u.loss(copy.deepcopy(model), x, y, torch.Generator().manual_seed(7))
    lt = t.loss(copy.deepcopy(model), x, y, torch.Generator().manual_seed(7))
    assert float(lu.detach()) == pytest.approx(float(lt.detach()), rel=1e-5)
    # trades_ce is that same objective plus kappa * CE on the adversaries, and differs from TRADES
    tc = build_method("trades_ce", cfg)
    assert (tc.uncertainty, tc.reference, tc.d2d, tc.iga, tc.adv_ce) == (False, False, False, False, cfg.ce_kappa)
    x_adv = t._kl_pgd(model, x, torch.Generator().manual_seed(3))
    ref = tc.terms(model, x, y, x_adv)["total"]
    from trustlab.systems.uadat.baselines import trades_loss

    expect = trades_loss(model(x), model(x_adv), y, cfg.trades_beta) + cfg.ce_kappa * F.cross_entropy(model(x_adv), y)
    assert float(ref.detach()) == pytest.approx(float(expect.detach()), rel=1e-5)
    assert abs(float(ref.detach()) - float(trades_loss(model(x), model(x_adv), y, cfg.trades_beta).detach())) > 1e-3
    uc = build_method("uadat_ce", cfg)
    assert uc.adv_ce == cfg.ce_kappa and uc.uncertainty and uc.reference and uc.d2d and uc.iga


def test_paired_interval():
    from trustlab.systems.uadat.experiment import paired_interval

    ci = paired_interval([0.5, 0.52, 0.51], [0.49, 0.50, 0.50])
    d = [0.01, 0.02, 0.01]
    assert ci["diff"] == pytest.approx(np.mean(d))
    half = 4.302652729911275 * np.std(d, ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert ci["ci_low"] == pytest.approx(np.mean(d) - half) and ci["ci_high"] == pytest.approx(np.mean(d) + half)
    one = paired_interval([0.5], [0.4])
    assert one["diff"] == pytest.approx(0.1) and np.isnan(one["ci_low"])


def test_tuning_grids_are_the_same_size_and_selection_follows_the_rule():
    from trustlab.systems.uadat.validation import GRIDS, grid, select

    assert set(GRIDS.values()) == {16} and {"pgd_at", "trades", "mart", "uadat", "uadat_ce", "trades_ce"} <= set(GRIDS)
    assert {p["trades_beta"] for p in grid("trades")} == {1.0, 3.0, 6.0, 9.0}
    assert {p["train_alpha"] for p in grid("pgd_at", 0.1)} == {0.025, 0.04, 0.05, 0.075}
    rows = [{"point": p, "seed": s, "sets": [f"p={p}"], "aa_reduced_acc": a, "nat_acc": n}
            for p, s, a, n in [(0, 100, 0.50, 0.7), (0, 101, 0.52, 0.7), (1, 100, 0.53, 0.6), (1, 101, 0.49, 0.6),
                               (2, 100, 0.40, 0.9), (2, 101, 0.41, 0.9)]]
    chosen = select(rows, "aa_reduced_acc")  # 0 and 1 tie on the mean (0.51): the higher natural accuracy wins
    assert chosen["point"] == 0 and chosen["n_points"] == 3
    with pytest.raises(ValueError):
        select(rows[:-1], "aa_reduced_acc")  # point 2 on fewer seeds


def test_key_figure_names_legacy_rows_from_the_files_own_config(tmp_path):
    from trustlab.systems.uadat.plots import figure_from_results, paired_from_results

    rows = [{"setting": "default", "method": m, "seed": s, "nat_acc": 0.7 + 0.01 * s, "aa_acc": a + 0.01 * s}
            for m, a in (("trades", 0.50), ("uadat", 0.52), ("uadat_no_iga", 0.51)) for s in (0, 1, 2)]
    legacy = {"rows": rows, "config": {"uadat_adv_ce": 1.0, "n_aa": 600}, "extra": {}}
    (tmp_path / "r.json").write_text(json.dumps(legacy))
    png = figure_from_results(tmp_path / "r.json", tmp_path / "k.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ci = paired_from_results(tmp_path / "r.json")
    assert ci["trades"]["diff"] == pytest.approx(0.02) and ci["trades"]["ci_low"] == pytest.approx(0.02)
