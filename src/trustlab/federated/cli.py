"""``trustlab fed SYSTEM``: run one federated experiment of NADAFD or FVL-FP on a chosen engine.

Examples:
    trustlab fed nadafd --engine flower-sim --num-clients 100 --fraction-fit 0.2 --rounds 2 --out runs/fed100
    trustlab fed nadafd --engine inprocess --method median --attack badnets --rounds 5 --out runs/median
    trustlab fed fvlfp --engine flower-sim --num-clients 8 --rounds 5 --out runs/fvlfp
    trustlab fed fvlfp --features my_features/manifest.json --out runs/fvlfp-own

Each writes ``DIR/results.json`` and the final global state: ``global_model.safetensors`` (NADAFD's
CNN; reload with ``trustlab.systems.nadafd.fed.load_global_model``) or ``prompts.safetensors``
(FVL-FP's prompts; reload with ``trustlab.systems.fvlfp.fed.load_prompts``).

Engines: ``flower-sim`` (Flower ServerApp + ClientApp on the Simulation Engine, Ray backend),
``inprocess`` (trustlab's sequential loop, same clients and strategies), ``flower-inline`` (the Flower
apps with messages delivered in this process, no Ray).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Run a federated system (nadafd, fvlfp) on Flower's Simulation Engine or in process.")

EngineOpt = Annotated[str, typer.Option("--engine", help="flower-sim | inprocess | flower-inline")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.json + the final global state).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of data, split, sampling and training.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Config override KEY=VALUE (repeatable).")]


def _quiet_flower() -> None:
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)


@app.command("nadafd")
def nadafd(
    out: OutOpt,
    engine: EngineOpt = "flower-sim",
    num_clients: Annotated[int, typer.Option("--num-clients", help="Clients (SuperNodes).")] = 10,
    fraction_fit: Annotated[float, typer.Option("--fraction-fit", help="Fraction of clients per round.")] = 1.0,
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 5,
    method: Annotated[str, typer.Option("--method", help="nadafd | nadafd_collusion | fedavg | median | "
                                                         "trimmed_mean | krum | multikrum | bulyan | flame | "
                                                         "fltrust | foolsgold | nadafd_no_{fdci,naat,dha}")] = "nadafd",
    attack: Annotated[str, typer.Option("--attack", help="speckle | badnets | dba | none")] = "speckle",
    seed: SeedOpt = 0,
    scale: Annotated[str, typer.Option("--scale", help="Base config: quick | smoke | default | paper.")] = "quick",
    set_: SetOpt = None,
) -> None:
    """NADAFD (or a baseline) on simulated SAR chips: writes results.json and global_model.safetensors."""
    from trustlab.config import parse_set
    from trustlab.systems.nadafd.fed import fed_run

    _quiet_flower()
    res = fed_run(out, engine=engine, num_clients=num_clients, fraction_fit=fraction_fit, rounds=rounds,
                  method=method, attack=attack, seed=seed, scale=scale, overrides=parse_set(set_ or []))
    m = res["metrics"]
    typer.echo(f"nadafd {res['setting']}/{method} on {engine}: clean_acc {m['clean_acc']:.3f}, asr {m['asr']:.3f}, "
               f"{res['wall_seconds']:.1f} s -> {out}/results.json, {out}/{res['model_file']}")


@app.command("fvlfp")
def fvlfp(
    out: OutOpt,
    engine: EngineOpt = "flower-sim",
    num_clients: Annotated[int, typer.Option("--num-clients", help="Clients of the synthetic world.")] = 8,
    fraction_fit: Annotated[float, typer.Option("--fraction-fit", help="Fraction of clients per round.")] = 1.0,
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 5,
    method: Annotated[str, typer.Option("--method", help="fvlfp | promptfl | fairfed | qffl | fvlfp_no_{cdfp,dsop,fpf}")] = "fvlfp",
    world: Annotated[str, typer.Option("--world", help="Synthetic world: aligned | partial.")] = "aligned",
    features: Annotated[Path | None, typer.Option("--features", help="Your precomputed image features: a "
                                                                    "manifest.json (see systems/fvlfp/README.md).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Your pixel .npz (tiny backbone shapes).")] = None,
    seed: SeedOpt = 0,
    scale: Annotated[str, typer.Option("--scale", help="Base config: quick | smoke | default | paper.")] = "quick",
    set_: SetOpt = None,
) -> None:
    """FVL-FP (or a baseline) prompt tuning: writes results.json and prompts.safetensors."""
    from trustlab.config import parse_set
    from trustlab.systems.fvlfp.fed import fed_run

    _quiet_flower()
    res = fed_run(out, engine=engine, num_clients=num_clients, fraction_fit=fraction_fit, rounds=rounds,
                  method=method, world=world, features=features, data=data, seed=seed, scale=scale,
                  overrides=parse_set(set_ or []))
    m = res["metrics"]
    typer.echo(f"fvlfp {method} on {engine}: acc {m['acc']:.3f}, dp_diff {m['dp_diff']:.3f}, "
               f"{res['wall_seconds']:.1f} s -> {out}/results.json, {out}/{res['prompts_file']}")
