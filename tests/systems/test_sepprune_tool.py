"""``trustlab prune`` on a separator defined only here (depthwise convs, residuals, normalisation)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from trustlab.cli import main
from trustlab.systems.sepprune.analysis import total_macs
from trustlab.systems.sepprune.generic import (
    GroupedModel,
    LayerCost,
    check_separator,
    flop_counter_macs,
    load_pruned,
    save_pruned,
)
from trustlab.systems.sepprune.method import SepPrune, keep_counts, keep_indices

HERE = __file__


class UserBlock(nn.Module):
    """Bottleneck -> hidden (PReLU, BatchNorm) -> depthwise (GroupNorm) -> back, with a residual add."""

    def __init__(self, b: int, h: int, d: int) -> None:
        super().__init__()
        self.expand = nn.Conv1d(b, h, 1)
        self.act = nn.PReLU(h)
        self.bn = nn.BatchNorm1d(h)
        self.depthwise = nn.Conv1d(h, h, 5, padding=2 * d, dilation=d, groups=h)
        self.gn = nn.GroupNorm(1, h)
        self.project = nn.Conv1d(h, b, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.gn(torch.tanh(self.depthwise(self.bn(self.act(self.expand(x)))))))


class UserSeparator(nn.Module):
    def __init__(self, n: int = 16, b: int = 10, h: int = 20, out_len_ok: bool = True) -> None:
        super().__init__()
        self.n, self.ok = n, out_len_ok
        self.front = nn.Conv1d(1, n, 8, stride=4, bias=False)
        self.squeeze = nn.Conv1d(n, b, 1)
        self.body = nn.ModuleList(UserBlock(b, h, 2**i) for i in range(3))
        self.head = nn.Conv1d(b, 2 * n, 1)
        self.back = nn.ConvTranspose1d(n, 1, 8, stride=4, bias=False)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        t = mix.shape[-1]
        w = torch.relu(self.front(nn.functional.pad(mix, (0, 8)).unsqueeze(1)))
        y = self.squeeze(w)
        for blk in self.body:
            y = blk(y)
        m = torch.sigmoid(self.head(y)).view(y.shape[0], 2, self.n, -1)
        est = self.back((w.unsqueeze(1) * m).flatten(0, 1)).view(mix.shape[0], 2, -1)
        return est[..., :t] if self.ok else est[:, 0, :t]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    m = UserSeparator()
    with torch.no_grad():  # non-trivial norm statistics and scales
        for blk in m.body:
            blk.bn.running_mean.normal_(0, 0.1)
            blk.bn.running_var.uniform_(0.5, 2.0)
            blk.gn.weight.uniform_(0.5, 1.5)
    return m.eval()


def make_bad_model() -> nn.Module:
    return UserSeparator(out_len_ok=False)


def test_groups_costs_and_macs_agree_with_flop_counter() -> None:
    model = make_model()
    gm = GroupedModel(model, 800)
    groups = gm.mask_groups()
    # three hidden groups (expand/act/bn/depthwise/gn/project-in) and the residual stream (squeeze/project-out)
    assert sorted(groups.values()) == [10, 20, 20, 20]
    assert all("front" not in g and "back" not in g and "head" not in g for g in groups)
    cost = LayerCost(model, list(gm.groups.values()), 8000)
    assert cost.dense == pytest.approx(flop_counter_macs(model, 8000), rel=0.02)
    assert cost.dense == pytest.approx(total_macs(model, 8000), rel=1e-9)
    g = torch.Generator().manual_seed(0)
    keep = cost.project({k: torch.rand(n, generator=g) for k, n in groups.items()}, 0.5)
    pruned = gm.prune(keep_indices(keep))
    ratio = cost.ratio(keep_counts(keep))
    assert 0.45 < ratio <= 0.5
    lib = flop_counter_macs(pruned, 8000)
    assert abs(cost.macs(keep_counts(keep)) - lib) <= 0.02 * lib
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    ones = {k: torch.ones(n) for k, n in groups.items()}
    x = torch.randn(2, 800, generator=g)
    with torch.no_grad():
        assert torch.allclose(gm(x, masks=ones), model(x), atol=1e-6)
        assert pruned(x).shape == (2, 2, 800)


def test_pruned_model_reloads_with_identical_outputs(tmp_path) -> None:  # noqa: ANN001
    model = make_model()
    gm = GroupedModel(model, 800)
    g = torch.Generator().manual_seed(1)
    keep = {k: torch.randperm(n, generator=g)[: n // 2 + 1] for k, n in gm.mask_groups().items()}
    pruned = gm.prune(keep).eval()
    save_pruned(tmp_path / "p", pruned, f"{HERE}:make_model", pruned.trustlab_plan, 800)
    assert not list((tmp_path / "p").glob("*.pt")) and not list((tmp_path / "p").glob("*.pkl"))
    again = load_pruned(tmp_path / "p")
    x = torch.randn(3, 1200, generator=g)
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))
    assert type(again).__name__ == "UserSeparator"


def test_generic_pruning_matches_trustlab_native_pruning() -> None:
    """Cross-check: torch-pruning's cut of our ConvTasNet's first block equals our own hand-written prune."""
    from trustlab.models.conv_tasnet import ConvTasNet

    torch.manual_seed(0)
    model = ConvTasNet(n_filters=16, kernel_size=8, bn_chan=12, hid_chan=20, n_blocks=2, n_repeats=1).eval()
    gm = GroupedModel(model, 800)
    assert "blocks.0.dconv" in gm.mask_groups()
    keep = torch.tensor([0, 3, 4, 9, 15, 19])
    ours = model.prune({"blocks.0.hidden": keep}).eval()
    theirs = gm.prune({"blocks.0.dconv": keep, **{g: None for g in gm.mask_groups() if g != "blocks.0.dconv"}})
    x = torch.randn(2, 900, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs.eval()(x), atol=1e-5)
        masks = {"blocks.0.dconv": torch.zeros(20).index_fill_(0, keep, 1.0)}
        native_masked = model(x, masks={"blocks.0.hidden": masks["blocks.0.dconv"]})
        assert torch.allclose(native_masked, ours(x), atol=1e-5)


def test_mask_learning_on_user_model_lowers_the_loss_and_freezes_weights() -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = GroupedModel(model, 800)
    cost = LayerCost(model, list(gm.groups.values()), 8000)

    def toy(seed: int):  # noqa: ANN202
        g = torch.Generator().manual_seed(seed)
        while True:
            src = torch.randn(4, 2, 800, generator=g) * torch.linspace(0.2, 1, 800)
            yield src.sum(1), src

    sp = SepPrune(target_macs=0.5, steps=30, lr=0.1, seed=0).fit(gm, toy(0), cost)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    losses = [h["loss"] for h in sp.history_]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # the scores learn (a no-op would not lower the loss)
    assert all(h["macs_ratio"] <= 0.5 + 1e-9 for h in sp.history_)
    assert cost.ratio(keep_counts(sp.keep(cost))) <= 0.5


def test_prune_verb_end_to_end(tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    rc = main(["prune", "--model", f"{HERE}:make_model", "--data", "embedded", "--macs", "0.5", "--steps", "4",
               "--finetune-steps", "2", "--segment", "0.25", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "MACs" in text and "latency" in text and "SI-SNRi" in text
    r = json.loads((out / "prune_report.json").read_text())
    assert 0.4 < r["macs_ratio"] <= 0.5 and r["params_ratio"] < 1
    for side in ("dense", "pruned"):
        assert abs(r[side]["macs_per_s"] - r[side]["macs_flop_counter"]) <= 0.02 * r[side]["macs_flop_counter"]
        assert r[side]["latency_s"] > 0
    model = load_pruned(out)
    assert sum(p.numel() for p in model.parameters()) == r["pruned"]["params"]
    assert check_separator(model) == 2


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", f"{HERE}:make_bad_model", "--data", "embedded", "--macs", "0.5"], "expected (2, speakers"),
    (["--model", f"{HERE}:make_model", "--data", "embedded", "--macs", "1.5"], "outside (0, 1)"),
    (["--model", f"{HERE}:make_model", "--data", "embedded", "--macs", "0"], "outside (0, 1)"),
    (["--model", f"{HERE}:make_model", "--data", "EMPTY", "--macs", "0.5"], "no mix*/"),
    (["--model", f"{HERE}:nope", "--data", "embedded", "--macs", "0.5"], "no callable"),
    (["--model", "no_colon", "--data", "embedded", "--macs", "0.5"], "MODULE:FACTORY"),
])
def test_prune_verb_bad_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path, capsys) -> None:  # noqa: ANN001
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    rc = main(["prune", *args, "--steps", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1


def test_prune_verb_reads_a_mixture_folder(tmp_path) -> None:  # noqa: ANN001
    import wave

    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(5):
        t = np.arange(4000) / 8000
        s1 = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) * (rng.random() + 0.5)
        s2 = 0.2 * np.sign(np.sin(2 * np.pi * (3 + i) * t)) * rng.standard_normal(4000) * 0.3
        for sub, x in (("mix", s1 + s2), ("s1", s1), ("s2", s2)):
            (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
            with wave.open(str(tmp_path / "d" / sub / f"{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    rc = main(["prune", "--model", f"{HERE}:make_model", "--data", str(tmp_path / "d"), "--macs", "0.6",
               "--method", "hrank", "--segment", "0.25", "--out", str(tmp_path / "o")])
    assert rc == 0
    r = json.loads((tmp_path / "o" / "prune_report.json").read_text())
    assert r["method"] == "hrank" and "4 training / 1 validation" in r["data"] and r["macs_ratio"] <= 0.6


def test_shipped_demo_separator_is_trained() -> None:
    from trustlab.systems.sepprune.tool import DEMO_WEIGHTS, demo_separator, load_mixtures
    from trustlab.systems.sepprune.training import evaluate

    assert DEMO_WEIGHTS.is_file()
    _, val, _ = load_mixtures("embedded", 0.5)
    trained = evaluate(demo_separator(), *val, with_sdr=False)["si_snri_db"]
    untrained = evaluate(demo_separator(pretrained=False), *val, with_sdr=False)["si_snri_db"]
    assert trained > 3.0 > untrained
