"""``trustlab robust-train`` and ``trustlab robust-eval``: adversarially train a classifier, save it, attack it.

Examples:
    trustlab robust-train --data fashion-mnist --arch small_cnn --method uadat --epochs 10 --out models/fm-uadat
    trustlab robust-train --data cifar10:/data/cifar-10-batches-py --arch preact_resnet18 --method trades \\
        --epochs 100 --device cuda --out models/c10-trades
    trustlab robust-train --data npz:my.npz --arch my_models:make_net --method pgd_at --out models/mine
    trustlab robust-eval --model models/fm-uadat --data fashion-mnist --limit 1000 --out models/fm-uadat/eval

The model folder holds ``model.safetensors`` + ``model.json`` (reload with
``trustlab.systems.uadat.tool.load_model``); ``robust-eval`` writes ``eval_report.json``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Annotated

import typer

from trustlab.errors import UserError

_settings = {"help_option_names": ["-h", "--help"]}
train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, context_settings=_settings)
eval_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, context_settings=_settings)

DataOpt = Annotated[str, typer.Option("--data", help="fashion-mnist | demo | cifar10:DIR | npz:FILE")]


def parse_eps(text: str | None) -> float | None:
    """``"8/255"`` or ``"0.1"`` -> float in (0, 1]; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        val = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise UserError(f"--eps {text!r} is not a number", "write e.g. --eps 8/255 or --eps 0.1") from exc
    if not 0 < val <= 1:
        raise UserError(f"--eps {text!r} is outside (0, 1]", "budgets are in [0, 1] pixel units, e.g. 8/255")
    return val


def parse_sets(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs (YAML scalars) for further training settings."""
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not KEY=VALUE", "write e.g. --set trades_beta=3")
        out[key.strip()] = yaml.safe_load(value)
    return out


@train_app.command()
def robust_train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (created).")],
    arch: Annotated[str, typer.Option("--arch", help="small_cnn | preact_resnet18 | preact_resnet8 | MODULE:FACTORY")]
    = "small_cnn",
    method: Annotated[str, typer.Option("--method", help="uadat | trades | pgd_at | mart | uadat_ce | trades_ce | "
                                                         "standard")] = "uadat",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 10,
    limit: Annotated[int | None, typer.Option("--limit", help="Train on a stratified subset of N images.")] = None,
    eps: Annotated[str | None, typer.Option("--eps", help="L-inf budget (default 0.1 grey, 8/255 colour).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="PGD steps of the training adversaries.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Mini-batch size.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak SGD learning rate (cosine schedule).")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, data order and attacks.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    sets: Annotated[list[str] | None, typer.Option("--set", help="Further setting KEY=VALUE (Config field).")] = None,
) -> None:
    """Adversarially train a classifier and save it (safetensors + JSON spec)."""
    from trustlab.systems.uadat.tool import robust_train as train
    from trustlab.utils.logging import setup_logging

    setup_logging()
    rep = train(data, arch, method, out, epochs=epochs, limit=limit, eps=parse_eps(eps), steps=steps,
                batch_size=batch_size, lr=lr, seed=seed, device=device, config=parse_sets(sets or []))
    typer.echo(f"trained {arch} with {method} for {epochs} epoch(s) on {rep['data']['n']} images "
               f"(final loss {rep['train_loss'][-1]:.3f}); saved to {out}/model.safetensors + model.json")


@eval_app.command()
def robust_eval(
    model: Annotated[Path, typer.Option("--model", help="Folder written by robust-train.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Report folder (eval_report.json).")],
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate a stratified subset of N images.")] = None,
    eps: Annotated[str | None, typer.Option("--eps", help="L-inf budget (default: the training budget).")] = None,
    attack: Annotated[str, typer.Option("--attack", help="standard (APGD-CE, APGD-T x9, Square 5000; no FAB-T) | "
                                                         "reduced")] = "standard",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attacks.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
) -> None:
    """Reload a robust-train model and measure clean, PGD-20 and AutoAttack accuracy."""
    from trustlab.systems.uadat.tool import robust_eval as evaluate
    from trustlab.systems.uadat.tool import summary_line
    from trustlab.utils.logging import setup_logging

    setup_logging()
    rep = evaluate(model, data, out, limit=limit, eps=parse_eps(eps), attack=attack, seed=seed, device=device)
    typer.echo(f"{summary_line(rep)}; report: {out}/eval_report.json")
