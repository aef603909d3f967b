"""The robust-training tool: train a classifier adversarially, save it, reload it, attack it with AutoAttack.

Python API (the CLI verbs ``trustlab robust-train`` / ``trustlab robust-eval`` call exactly these)::

    from trustlab.systems.uadat.tool import robust_train, robust_eval, load_model
    robust_train("npz:my_images.npz", "small_cnn", "uadat", out="runs/my-model", epochs=10)
    model, spec = load_model("runs/my-model")           # a plain torch.nn.Module in eval mode
    report = robust_eval("runs/my-model", "npz:my_images.npz", out="runs/my-model-eval")

A model folder holds ``model.safetensors`` (the state dict, no pickle) and ``model.json`` (the spec that
rebuilds the architecture: ``arch`` plus its arguments, the input shape, the classes, the training method
and its settings); ``train_report.json`` holds the per-epoch losses and times.

Data specs: ``fashion-mnist`` (Debian package ``dataset-fashion-mnist``), ``cifar10:DIR`` (the python
batches folder), ``npz:FILE`` (keys ``x``/``y`` or ``x_train``/``y_train``/``x_test``/``y_test``) and
``demo`` (256/64 Fashion-MNIST images shipped with trustlab). Training reads the train split, evaluation
the test split. Architectures: ``small_cnn``, ``preact_resnet18`` (PreAct ResNet-18), ``preact_resnet8``
or ``MODULE:FACTORY`` (your own: ``FACTORY`` is called with those of ``in_channels``, ``num_classes`` and
``image_size`` that it accepts and must return an ``nn.Module`` mapping ``[0, 1]`` images to logits;
``--method uadat`` additionally needs ``.stem``/``.tail`` modules with ``model(x) == tail(stem(x))``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.data.images import (
    DataCard,
    ImageData,
    load_cifar10,
    load_fashion_mnist,
    load_npz_images,
    stratified_indices,
)
from trustlab.errors import UserError
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

METHODS: tuple[str, ...] = ("uadat", "trades", "pgd_at", "mart", "uadat_ce", "trades_ce", "standard")
BUILTIN_ARCHS: tuple[str, ...] = ("small_cnn", "preact_resnet18", "preact_resnet8")
DEMO_FILE = Path(__file__).with_name("assets") / "fashion_mnist_demo.safetensors"
FORMAT = "trustlab.robust-model/1"


# -- data -------------------------------------------------------------------------------------------
def load_demo(split: str = "train") -> ImageData:
    """The embedded demo subset: 256 train / 64 test Fashion-MNIST images (class-balanced, MIT licence).

    Drawn with :func:`~trustlab.data.images.stratified_indices` (seed 0) from the Debian package's
    files; stored as uint8 safetensors inside the package so the demo needs no installed data set.
    """
    from trustlab.data.images import FASHION_MNIST_CLASSES
    from trustlab.utils.io import load_tensors

    tensors, _ = load_tensors(DEMO_FILE)
    x = tensors[f"x_{split}"].float().div(255.0)
    y = tensors[f"y_{split}"].long()
    card = DataCard("fashion-mnist-demo", int(len(y)), FASHION_MNIST_CLASSES, tuple(x.shape[1:]),
                    f"embedded subset of Fashion-MNIST ({split})", "MIT (Zalando Research)", "class-balanced, seed 0")
    return ImageData(x, y, card)


def load_data(spec: str, split: str, limit: int | None = None, seed: int = 0) -> ImageData:
    """Load a data spec (see the module docstring); ``limit`` keeps a stratified subset of that size.

    Raises:
        UserError: unknown spec, missing files, malformed data or a bad ``limit``.
    """
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("fashion-mnist", "fmnist") and not sep:
        data = load_fashion_mnist(split)
    elif kind == "demo" and not sep:
        data = load_demo(split)
    elif kind in ("cifar10", "cifar-10"):
        if not arg:
            raise UserError("--data cifar10 needs the folder", "write --data cifar10:/path/to/cifar-10-batches-py")
        data = load_cifar10(arg, split)
    elif kind == "npz":
        if not arg:
            raise UserError("--data npz needs a file", "write --data npz:/path/to/images.npz")
        data = load_npz_images(arg, split)
    else:
        raise UserError(f"unknown --data {spec!r}", "use fashion-mnist, demo, cifar10:DIR or npz:FILE")
    if limit is not None:
        if limit < 2:
            raise UserError(f"--limit {limit} is too small", "use --limit 2 or more (or leave it out)")
        if limit < len(data):
            data = data.subset(stratified_indices(data.y.numpy(), limit, np.random.default_rng(seed)),
                               note=f"stratified subset of {limit}")
    return data


# -- models -----------------------------------------------------------------------------------------
def _import_factory(target: str) -> Any:
    module, _, attr = target.partition(":")
    if target == "resnet":
        raise UserError("--arch resnet was renamed: that network is a PreAct ResNet-8 (one block per stage)",
                        "use --arch preact_resnet8, or --arch preact_resnet18 for PreAct ResNet-18")
    if not module or not attr:
        raise UserError(f"--arch {target!r} is neither a built-in nor MODULE:FACTORY",
                        f"use one of {', '.join(BUILTIN_ARCHS)} or e.g. --arch my_models:make_net")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"cannot import module {module!r} of --arch {target!r} ({exc})",
                        "put the module on PYTHONPATH (or run from its folder)") from exc
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise UserError(f"module {module!r} has no callable {attr!r}", "name a function or class that builds the model")
    return fn


def build_arch(arch: str, in_channels: int, num_classes: int, image_size: int,
               kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``arch`` for the data shape; returns ``(model, kwargs)`` where ``kwargs`` rebuild it.

    Raises:
        UserError: unknown architecture, a factory that fails or does not return a module.
    """
    from trustlab.models.resnet import preact_resnet8, preact_resnet18
    from trustlab.models.small_cnn import SmallCNN

    if kwargs is not None:
        kw = dict(kwargs)
    elif arch == "small_cnn":
        kw = {"in_channels": in_channels, "num_classes": num_classes, "width": 16, "hidden": 128,
              "image_size": image_size}
    elif arch == "preact_resnet8":
        kw = {"in_channels": in_channels, "num_classes": num_classes, "width": 16}
    elif arch == "preact_resnet18":
        kw = {"in_channels": in_channels, "num_classes": num_classes}
    else:
        fn = _import_factory(arch)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        offered = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kw = {k: v for k, v in offered.items() if var_kw or k in params}
    if arch == "small_cnn":
        if image_size % 4:
            raise UserError(f"small_cnn needs an image side divisible by 4, got {image_size}",
                            "use preact_resnet18 or your own --arch MODULE:FACTORY")
        return SmallCNN(**kw), kw
    if arch == "preact_resnet8":
        return preact_resnet8(**kw), kw
    if arch == "preact_resnet18":
        return preact_resnet18(**kw), kw
    fn = _import_factory(arch)
    try:
        model = fn(**kw)
    except Exception as exc:  # noqa: BLE001 - a user factory can fail in any way; report it on one line
        raise UserError(f"--arch {arch!r} failed when called with {kw} ({type(exc).__name__}: {exc})",
                        "make the factory accept in_channels/num_classes/image_size or take no arguments") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch {arch!r} returned {type(model).__name__}, not a torch.nn.Module",
                        "return the model from the factory")
    return model, kw


def check_model(model: nn.Module, data: ImageData, num_classes: int, arch: str) -> None:
    """The model maps one batch of the data to ``(B, num_classes)`` logits, else a one-line error."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.x[:2])
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--arch {arch!r} fails on images of shape {tuple(data.x.shape[1:])} "
                        f"({type(exc).__name__}: {exc})", "build the model for this input shape") from exc
    if not (isinstance(out, torch.Tensor) and out.shape == (2, num_classes)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"--arch {arch!r} returns {shape} for 2 images, expected (2, {num_classes}) logits",
                        "return one logit per class")


# -- training ---------------------------------------------------------------------------------------
def default_eps(in_channels: int) -> float:
    """0.1 for grey images (the usual Fashion-MNIST budget), 8/255 for colour ones (CIFAR-10's)."""
    return 0.1 if in_channels == 1 else 8 / 255


def robust_train(data: str, arch: str, method: str, out: str | Path, epochs: int = 10, limit: int | None = None,
                 eps: float | None = None, steps: int = 10, batch_size: int = 128, lr: float = 0.05,
                 seed: int = 0, device: str = "auto", config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Adversarially train ``arch`` on ``data`` with ``method`` and save it to the folder ``out``.

    :func:`fit_model` followed by :func:`save_model`; the arguments are :func:`fit_model`'s.

    Returns:
        The training report (also written to ``out/train_report.json``).
    """
    from trustlab.runner import ensure_writable

    out = Path(out)
    model, spec, report = fit_model(data, arch, method, epochs, limit, eps, steps, batch_size, lr, seed, device,
                                    config, check_out=out)
    save_model(model, spec, report, ensure_writable(out))
    return report


def save_model(model: nn.Module, spec: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    """Write ``model.safetensors`` (+ spec as metadata), ``model.json`` and ``train_report.json`` atomically."""
    from trustlab.utils.io import atomic_write_json, save_module

    save_module(out / "model.safetensors", model, spec)
    atomic_write_json(out / "model.json", spec)
    atomic_write_json(out / "train_report.json", {**report, "model": str(out)})
    log.info("saved %s (%s, %s, %d epochs) to %s", spec["arch"], spec["method"], spec["data"], spec["epochs"], out)


def fit_model(data: str, arch: str, method: str, epochs: int = 10, limit: int | None = None,
              eps: float | None = None, steps: int = 10, batch_size: int = 128, lr: float = 0.05,
              seed: int = 0, device: str = "auto", config: dict[str, Any] | None = None,
              check_out: Path | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Adversarially train ``arch`` on ``data`` with ``method``; returns ``(model, spec, report)`` (not saved).

    Args:
        data: Data spec (training split used).
        arch: ``small_cnn``, ``preact_resnet18``, ``preact_resnet8`` or ``MODULE:FACTORY``.
        method: ``uadat`` (κ = 0, as the abstract), ``trades``, ``pgd_at``, ``mart``, ``uadat_ce``,
            ``trades_ce`` or ``standard``; hyper-parameters are the experiment's defaults
            (:class:`~trustlab.systems.uadat.config.Config`), overridable with ``config``.
        epochs: Training epochs.
        limit: Train on a stratified subset of this size.
        eps: L∞ budget (default :func:`default_eps`).
        steps: PGD steps of the training adversaries (step size 2.5·eps/steps).
        batch_size: Mini-batch size.
        lr: Peak SGD learning rate (cosine schedule).
        seed: Seed of the initial weights, data order and attack randomness.
        device: ``auto``, ``cpu`` or ``cuda``.
        config: Further :class:`Config` fields (e.g. ``{"trades_beta": 3.0}``).
        check_out: When given, checked writable before training starts.

    Raises:
        UserError: bad arguments, data or architecture.
    """
    from trustlab.runner import ensure_writable
    from trustlab.systems.uadat.config import Config
    from trustlab.systems.uadat.experiment import build_method
    from trustlab.systems.uadat.training import fit
    from trustlab.utils.device import resolve_device
    from trustlab.utils.seed import make_generator

    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}", f"use one of {', '.join(METHODS)}")
    if epochs < 1 or steps < 1 or batch_size < 2 or not lr > 0:
        raise UserError(f"need --epochs >= 1, --steps >= 1, --batch-size >= 2 and --lr > 0 "
                        f"(got {epochs}, {steps}, {batch_size}, {lr})", "fix the option")
    train = load_data(data, "train", limit, seed)
    c, side = int(train.x.shape[1]), int(train.x.shape[-1])
    k = max(int(train.y.max()) + 1, len(train.card.classes))
    eps = default_eps(c) if eps is None else float(eps)
    if not 0 < eps <= 1:
        raise UserError(f"--eps {eps:g} is outside (0, 1]", "budgets are in [0, 1] pixel units, e.g. 8/255")
    bs = min(batch_size, len(train))
    if bs < 2:
        raise UserError(f"only {len(train)} training image(s)", "pass at least two")
    fields = {f.name for f in dataclasses.fields(Config)}
    extra = dict(config or {})
    unknown = sorted(set(extra) - fields)
    if unknown:
        raise UserError(f"unknown setting(s) {unknown}", "use fields of trustlab.systems.uadat.config.Config")
    try:
        cfg = Config(**{**extra, "eps": eps, "train_steps": steps, "epochs": epochs, "batch_size": bs, "lr": lr})
    except TypeError as exc:
        raise UserError(f"bad setting ({exc})", "check the names and values") from exc
    cfg.validate()
    torch.manual_seed(seed)
    model, kwargs = build_arch(arch, c, k, side)
    check_model(model, train, k, arch)
    if method in ("uadat", "uadat_ce", "trades_ce") and not (hasattr(model, "stem") and hasattr(model, "tail")):
        raise UserError(f"--method {method} needs a model with .stem and .tail (model(x) == tail(stem(x)))",
                        "add stem/tail modules to your model, or use --method trades, pgd_at or mart")
    if check_out is not None:
        ensure_writable(check_out)
    dev = resolve_device(device)
    m = build_method(method, cfg)
    t0 = time.time()
    res = fit(model, m, train.x, train.y, epochs, bs, lr, weight_decay=cfg.weight_decay,
              generator=make_generator(seed), device=dev, desc=f"robust-train {method}")
    model.eval().cpu()
    alpha = cfg.train_alpha if cfg.train_alpha is not None else 2.5 * eps / steps
    spec = {
        "format": FORMAT, "arch": arch, "arch_kwargs": kwargs, "input_shape": list(train.x.shape[1:]),
        "num_classes": k, "classes": list(train.card.classes), "data": data, "n_train": len(train),
        "method": method, "eps": eps, "train_steps": steps, "train_alpha": alpha, "epochs": epochs,
        "batch_size": bs, "lr": lr, "seed": seed,
        "method_settings": {f: getattr(cfg, f) for f in sorted(fields) if f.startswith(("trades_", "mart_", "uadat_"))
                            or f == "ce_kappa"},
    }
    report = {"method": method, "arch": arch, "data": train.card.to_dict(), "device": str(dev),
              "epochs": epochs, "train_loss": res.losses, "epoch_times_s": res.epoch_times,
              "wall_time_s": time.time() - t0}
    return model, spec, report


# -- reloading and evaluation -----------------------------------------------------------------------
def load_model(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved model from ``model.json`` and load ``model.safetensors`` (strict); eval mode.

    Raises:
        UserError: missing or malformed folder, or weights that do not fit the spec.
    """
    from trustlab.utils.io import load_tensors, read_json

    folder = Path(os.path.normpath(folder))  # lexical: "a/b/../c" works even when "a/b" does not exist yet
    spec_path = folder / "model.json"
    if not spec_path.is_file():
        raise UserError(f"{str(folder)!r} holds no model.json", "pass a folder written by trustlab robust-train")
    spec = read_json(spec_path)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise UserError(f"{str(spec_path)!r} is not a trustlab robust-model spec", "pass a robust-train folder")
    c, _h, w = spec["input_shape"]
    model, _ = build_arch(spec["arch"], c, spec["num_classes"], w, spec["arch_kwargs"])
    state, _meta = load_tensors(folder / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"the weights in {str(folder)!r} do not fit {spec['arch']!r} "
                        f"({str(exc).splitlines()[0]})", "retrain, or check that MODULE:FACTORY is unchanged") from exc
    return model.to(device).eval(), spec


def robust_eval(model_dir: str | Path, data: str, out: str | Path, limit: int | None = None,
                eps: float | None = None, attack: str = "standard", pgd_steps: int = 20, seed: int = 0,
                device: str = "auto", batch_size: int = 128) -> dict[str, Any]:
    """Reload a robust-train folder and measure clean, PGD and AutoAttack accuracy on ``data``'s test split.

    Args:
        model_dir: The folder written by :func:`robust_train`.
        data: Data spec (test split used).
        out: Report folder (``eval_report.json``).
        limit: Evaluate a stratified subset of this size.
        eps: L∞ budget (default: the model's training budget).
        attack: ``standard`` (``aa_standard_nofab``: APGD-CE 100 it, APGD-T over 9 targets, Square 5,000
            queries; no FAB-T, which ART lacks) or ``reduced`` (``aa_reduced``: APGD-CE, APGD-DLR at 20
            iterations, Square at 100 queries).
        pgd_steps: Iterations of the PGD check (uniform start, step eps/4).
        seed: Seed of the attacks' randomness.
        device: ``auto``, ``cpu`` or ``cuda`` (AutoAttack runs there too).
        batch_size: Attack batch size.

    Raises:
        UserError: bad arguments, or data that does not fit the model.
    """
    from trustlab.attacks.pgd import PGD
    from trustlab.metrics.classification import natural_accuracy, robust_correct_mask
    from trustlab.runner import ensure_writable
    from trustlab.systems.uadat.evaluation import AAConfig, art_autoattack
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json
    from trustlab.utils.seed import make_generator

    if attack not in ("standard", "reduced"):
        raise UserError(f"unknown --attack {attack!r}", "use standard or reduced")
    if pgd_steps < 1 or batch_size < 1:
        raise UserError("--pgd-steps and --batch-size must be >= 1", "fix the option")
    model, spec = load_model(model_dir)
    test = load_data(data, "test", limit, seed)
    if list(test.x.shape[1:]) != list(spec["input_shape"]):
        raise UserError(f"--data {data!r} has images of shape {tuple(test.x.shape[1:])}, the model takes "
                        f"{tuple(spec['input_shape'])}", "evaluate on data of the shape it was trained on")
    if int(test.y.max()) >= spec["num_classes"]:
        raise UserError(f"--data {data!r} has label {int(test.y.max())}, the model has {spec['num_classes']} classes",
                        "evaluate on data with the training classes")
    eps = float(spec["eps"]) if eps is None else float(eps)
    if not 0 < eps <= 1:
        raise UserError(f"--eps {eps:g} is outside (0, 1]", "budgets are in [0, 1] pixel units, e.g. 8/255")
    out = ensure_writable(Path(out))
    dev = resolve_device(device)
    model.to(dev)
    t0 = time.time()
    nat = natural_accuracy(model, test.x, test.y, device=dev)
    pgd = PGD(model, eps, eps / 4, pgd_steps, random_init="uniform", generator=make_generator(seed))
    pgd_acc = float(robust_correct_mask(model, pgd, test.x, test.y, device=dev).float().mean())
    cfg = AAConfig.standard(eps, batch_size) if attack == "standard" else AAConfig(eps, 20, 1, 100, batch_size)
    aa = art_autoattack(model, test.x, test.y, cfg, nb_classes=spec["num_classes"], seed=seed, device=dev)
    broke = {label: int(sum(1 for b in aa["best_attacks"] if b == i)) for i, label in enumerate(aa["attack_runs"])}
    report = {
        "model": str(model_dir), "data": test.card.to_dict(), "n": len(test), "eps": eps, "device": str(dev),
        "nat_acc": nat, f"pgd{pgd_steps}_acc": pgd_acc, aa["metric"]: aa["acc"], "autoattack": aa["name"],
        "autoattack_attacks": aa["attacks"], "points_broken_by": broke, "aa_max_linf": aa["max_linf"],
        "trained_with": {k: spec[k] for k in ("method", "arch", "eps", "epochs", "data")},
        "wall_time_s": time.time() - t0,
    }
    atomic_write_json(out / "eval_report.json", report)
    log.info("%s: clean %.3f, PGD-%d %.3f, %s %.3f on %d points", model_dir, nat, pgd_steps, pgd_acc, aa["name"],
             aa["acc"], len(test))
    return report


def summary_line(report: dict[str, Any]) -> str:
    """One line for the terminal."""
    keys = [k for k in report if k.endswith("_acc")]
    return ", ".join(f"{k} {report[k]:.3f}" for k in keys) + (f" ({report['autoattack']}, n={report['n']})"
                                                              if "autoattack" in report else "")


def dumps(report: dict[str, Any]) -> str:
    """The report as indented JSON (for ``--json``)."""
    return json.dumps(report, indent=2, default=str)
