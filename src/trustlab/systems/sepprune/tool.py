"""The ``trustlab prune`` tool as a Python function: SepPrune (or a baseline) on any separator.

>>> from trustlab.systems.sepprune.tool import prune_separator            # doctest: +SKIP
>>> report = prune_separator("mypkg.models:make_separator", "Libri2Mix/wav8k/min/dev", 0.5, "pruned/",
...                          weights="separator.safetensors")
>>> from trustlab.systems.sepprune import load_pruned
>>> model = load_pruned("pruned/")                                        # an ordinary, smaller nn.Module

Steps: load and check the model (mixtures ``[B, T]`` -> sources ``[B, S, T]``); find its channel
groups with torch-pruning and count their MACs (:mod:`.generic`); score channels (SepPrune's learned
masks, or L1 / HRank / random); keep the best channels under the MACs budget; prune physically;
optionally fine-tune; evaluate SI-SNRi on held-out mixtures; measure CPU latency; save without pickle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

METHODS = ("sepprune", "sepprune_l1init", "l1", "hrank", "random")
SR = 8000


class _DemoBlock(nn.Module):
    def __init__(self, b: int, h: int, d: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(b, h, 1)
        self.act = nn.PReLU()
        self.norm = nn.GroupNorm(1, h)
        self.dw = nn.Conv1d(h, h, 3, padding=d, dilation=d, groups=h)
        self.norm2 = nn.GroupNorm(1, h)
        self.out = nn.Conv1d(h, b, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.norm2(torch.relu(self.dw(self.norm(self.act(self.inp(x)))))))


class DemoSeparator(nn.Module):
    """A small plain-PyTorch TCN mask separator (the demo's 'user model'; nothing trustlab-specific)."""

    def __init__(self, n_filters: int = 32, bn_chan: int = 24, hid_chan: int = 48, n_blocks: int = 4,
                 n_src: int = 2) -> None:
        super().__init__()
        self.n_src, self.n = n_src, n_filters
        self.enc = nn.Conv1d(1, n_filters, 16, stride=8, bias=False)
        self.bottleneck = nn.Conv1d(n_filters, bn_chan, 1)
        self.blocks = nn.Sequential(*[_DemoBlock(bn_chan, hid_chan, 2**i) for i in range(n_blocks)])
        self.mask = nn.Conv1d(bn_chan, n_src * n_filters, 1)
        self.dec = nn.ConvTranspose1d(n_filters, 1, 16, stride=8, bias=False)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        t = mix.shape[-1]
        w = torch.relu(self.enc(nn.functional.pad(mix, (0, 16)).unsqueeze(1)))
        m = torch.sigmoid(self.mask(self.blocks(self.bottleneck(w))))
        b, _, k = m.shape
        est = self.dec((w.unsqueeze(1) * m.view(b, self.n_src, self.n, k)).reshape(b * self.n_src, self.n, k))
        return est.view(b, self.n_src, -1)[..., :t]


DEMO_WEIGHTS = Path(__file__).with_name("demo_separator.safetensors")
DEMO_RECIPE = {"steps": 600, "batch_size": 8, "lr": 2e-3, "segment_s": 0.5, "seed": 0, "data": "embedded"}


def demo_separator(pretrained: bool = True) -> nn.Module:
    """The demo's 'user model': ``--model trustlab.systems.sepprune.tool:demo_separator``.

    Loads the shipped weights (``demo_separator.safetensors``, trained by :func:`train_demo_separator`
    with ``DEMO_RECIPE`` on the embedded pseudo-speech) when present and ``pretrained``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DemoSeparator()
    if pretrained and DEMO_WEIGHTS.is_file():
        from trustlab.utils.io import load_tensors

        model.load_state_dict(load_tensors(DEMO_WEIGHTS)[0], strict=True)
    return model.eval()


def train_demo_separator(path: str | Path = DEMO_WEIGHTS) -> Path:
    """Train the demo separator with ``DEMO_RECIPE`` (one thread, seeded) and save its weights (safetensors)."""
    from trustlab.systems.sepprune.training import batches, train
    from trustlab.utils.io import save_tensors

    r = DEMO_RECIPE
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(r["seed"])
        model = demo_separator(pretrained=False)
        make, _, _ = load_mixtures("embedded", r["segment_s"])
        ds = make(r["steps"] * r["batch_size"], r["seed"] + 10)
        train(model, batches(ds, r["batch_size"], r["seed"]), r["steps"], r["lr"], desc="demo separator")
    finally:
        torch.set_num_threads(old)
    return save_tensors(path, {k: v.contiguous() for k, v in model.state_dict().items()}, {"recipe": r})


def load_mixtures(data: str, segment_s: float = 1.0) -> tuple[Any, tuple[torch.Tensor, torch.Tensor], str]:
    """``(train dataset factory (n, seed) -> Dataset, validation (mix, sources), description)``.

    ``data`` is a Libri2Mix-style folder (``mix*/``, ``s1/``, ``s2/``; the last fifth of the files, at
    least one, is the validation split) or ``embedded``: formant pseudo-speech of 8 speakers (fixed
    seed 0), 6 for training and 2 held out for validation (16 mixtures).
    """
    from trustlab.data.speech import MixtureSet, build_corpus, load_mixture_folder, split_speakers
    from trustlab.systems.sepprune.data import CropSet

    n = int(segment_s * SR)
    if data == "embedded":
        corpus = build_corpus(8, 1, seed=0, source="formant")
        train_spk, val_spk = split_speakers(len(corpus), 2)
        val = MixtureSet(corpus, val_spk, 16, n, seed=1).tensors()

        def make(k: int, s: int) -> torch.utils.data.Dataset:
            return MixtureSet(corpus, train_spk, k, n, seed=s)

        return make, val, "embedded formant pseudo-speech (6 training speakers, 2 held-out validation speakers)"
    p = Path(data)
    if not p.is_dir():
        raise UserError(f"--data {data!r} is neither 'embedded' nor a folder", "pass a folder with mix/, s1/, s2/")
    mix, src, names = load_mixture_folder(p, SR)
    if len(names) < 2:
        raise UserError(f"--data {data!r} holds {len(names)} mixture; need >= 2 (training + validation)",
                        "add mixtures to mix/, s1/, s2/")
    n_val = max(1, len(names) // 5)
    tr_mix, tr_src, va_mix, va_src = mix[:-n_val], src[:-n_val], mix[-n_val:], src[-n_val:]

    def make_folder(k: int, s: int) -> torch.utils.data.Dataset:
        return CropSet(tr_mix, tr_src, k, n, s)

    return make_folder, (va_mix, va_src), f"{len(names) - n_val} training / {n_val} validation mixtures from {data}"


def prune_separator(model: str, data: str, macs: float, out: str | Path, weights: str | None = None,
                    method: str = "sepprune", steps: int = 100, mask_lr: float | None = None, eps: float = 0.7,
                    finetune_steps: int = 0, lr: float = 1e-3, batch_size: int = 4, segment_s: float = 1.0,
                    seed: int = 0, latency_s: float = 1.0, device: str = "cpu") -> dict[str, Any]:
    """Prune the separator built by ``model`` (``MODULE:FACTORY``) to ``macs`` x its MACs; see the module doc.

    Methods: ``sepprune`` (the released code's mask learning: scores U(0, 1), Adam lr 0.1, threshold
    eps = 0.7 turned into the MACs budget by a global top-k), ``sepprune_l1init`` (our variant: scores
    from standardized L1 norms, lr 0.02), ``l1`` (group L1 magnitude), ``hrank`` (feature-map rank),
    ``random``.

    Returns:
        The report written to ``out/prune_report.json``.
    """
    from trustlab.systems.sepprune.analysis import measure_latency, n_params
    from trustlab.systems.sepprune.generic import (
        GroupedModel,
        LayerCost,
        build_user_model,
        check_separator,
        flop_counter_macs,
        save_pruned,
    )
    from trustlab.systems.sepprune.method import SepPrune, budget_keep, keep_counts, keep_indices
    from trustlab.systems.sepprune.training import batches, evaluate, train
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json
    from trustlab.utils.seed import derive_seed

    if not 0 < macs < 1:
        raise UserError(f"--macs {macs} is outside (0, 1)", "give the kept fraction of the MACs, e.g. --macs 0.5")
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}", f"use one of {', '.join(METHODS)}")
    for name, v in (("--steps", steps), ("--batch-size", batch_size)):
        if v < 1:
            raise UserError(f"{name} {v} must be >= 1", f"use e.g. {name} 4")
    if finetune_steps < 0 or lr <= 0 or not 0 < eps < 1 or segment_s < 0.05 or latency_s <= 0:
        raise UserError("--finetune-steps must be >= 0, --lr > 0, --eps in (0, 1), --segment >= 0.05 s, --latency > 0",
                        "check the options")
    dev = resolve_device(device)
    dense = build_user_model(model, weights)
    n_src = check_separator(dense)
    make_train, val, desc = load_mixtures(data, segment_s)
    if val[1].shape[1] != n_src:
        raise UserError(f"the model outputs {n_src} sources but the mixtures have {val[1].shape[1]}",
                        "use a model and data with the same number of speakers")
    t0 = time.perf_counter()
    grouped = GroupedModel(dense, n_samples=800)
    cost = LayerCost(dense, list(grouped.groups.values()), SR)
    floor = cost.macs({g: 1 for g in grouped.groups}) / cost.dense
    if macs <= floor:
        raise UserError(f"--macs {macs} is at or below {floor:.3f}, the least reachable by keeping one channel of each "
                        f"of the {len(grouped.groups)} prunable groups", f"use --macs above {floor:.3f}")
    sizes = grouped.mask_groups()
    dense.to(dev)
    gen = torch.Generator().manual_seed(derive_seed(seed, "select"))
    history: list[dict[str, float]] = []
    if method.startswith("sepprune"):
        kw = {"lr": 0.1, "init": "uniform"} if method == "sepprune" else {"lr": 0.02, "init": "l1"}
        if mask_lr is not None:
            kw["lr"] = mask_lr
        sp = SepPrune(eps=eps, target_macs=macs, steps=steps, seed=seed, **kw)
        ds = make_train(steps * batch_size, derive_seed(seed, "mask"))
        sp.fit(grouped, batches(ds, batch_size, derive_seed(seed, "mask-order")), cost, device=dev)
        keep = sp.keep(cost)
        history = sp.history_
    else:
        if method == "l1":
            scores = grouped.l1_scores()
        elif method == "hrank":
            calib = make_train(max(8, batch_size), derive_seed(seed, "calibration"))
            scores = grouped.hrank_scores(torch.stack([calib[i][0] for i in range(len(calib))]).to(dev))
        else:
            scores = {g: torch.rand(n, generator=gen) for g, n in sizes.items()}
        keep = budget_keep(scores, cost, macs)
    counts = keep_counts(keep)
    pruned = grouped.prune(keep_indices(keep))
    grouped.remove_hooks()
    plan = pruned.trustlab_plan  # type: ignore[attr-defined]
    select_s = time.perf_counter() - t0
    pre = evaluate(pruned, *val, device=dev, with_sdr=False)["si_snri_db"]
    if finetune_steps:
        ds = make_train(finetune_steps * batch_size, derive_seed(seed, "finetune"))
        train(pruned, batches(ds, batch_size, derive_seed(seed, "order")), finetune_steps, lr, device=dev,
              desc="fine-tune")
    pruned = pruned.cpu().eval()
    dense = dense.cpu().eval()
    lat = measure_latency({"dense": dense, "pruned": pruned}, int(latency_s * SR), repeats=15, warmup=2)
    report = {
        "model": model, "weights": weights, "data": desc, "method": method, "target_macs": macs, "seed": seed,
        "mask_steps": steps if method.startswith("sepprune") else 0, "finetune_steps": finetune_steps,
        "groups": {g: {"channels": sizes[g], "kept": counts[g], "macs_per_channel": cost.cost[g]} for g in sizes},
        "dense": {"macs_per_s": cost.dense, "macs_flop_counter": flop_counter_macs(dense, SR),
                  "params": n_params(dense), "latency_s": lat["dense"],
                  "si_snri_db": evaluate(dense, *val, device=dev, with_sdr=False)["si_snri_db"]},
        "pruned": {"macs_per_s": cost.macs(counts), "macs_flop_counter": flop_counter_macs(pruned, SR),
                   "params": n_params(pruned), "latency_s": lat["pruned"], "si_snri_db_before_finetune": pre,
                   "si_snri_db": evaluate(pruned, *val, device=dev, with_sdr=False)["si_snri_db"]},
        "selection_s": select_s,
        "mask_history": history[:: max(1, len(history) // 50)],
    }
    report["macs_ratio"] = report["pruned"]["macs_per_s"] / report["dense"]["macs_per_s"]
    report["params_ratio"] = report["pruned"]["params"] / report["dense"]["params"]
    report["latency_ratio"] = lat["pruned"] / lat["dense"]
    out = Path(out)
    save_pruned(out, pruned, model, plan, 800, {"method": method, "macs_ratio": report["macs_ratio"]})
    atomic_write_json(out / "prune_report.json", report)
    return report
