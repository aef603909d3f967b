"""The ``trustlab`` command line (typer). Commands are thin: parse, build the config, call the library.

Examples:
    trustlab list
    trustlab run nadafd --scale smoke --set rounds=5 --seed 1
    trustlab reproduce --all --scale default
    trustlab report runs/nadafd/default-*/
    trustlab env
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from trustlab.errors import UserError

app = typer.Typer(
    name="trustlab",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Ten research systems on trustworthy and efficient ML, reproduced against their baselines.",
)

#: Extra commands contributed by systems, imported only when invoked: name -> ("module:typer_app", help).
#: One tool verb per system (see docs/design: "Tools: one verb per system").
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "fed": ("trustlab.federated.cli:app", "Federated training of NADAFD / FVL-FP (in-process or Flower) [nadafd, fvlfp]."),
    "extract": ("trustlab.systems.gfm_extraction.cli:app", "Extract a graph foundation model's encoder [gfm-extraction]."),
    "refusal-index": ("trustlab.systems.refusal_index.cli:app", "Refusal Index of a model or endpoint [refusal-index]."),
    "quantize": ("trustlab.systems.impq.cli:app", "Mixed-precision quantization of a causal LM [impq]."),
    "prune": ("trustlab.systems.sepprune.cli:app", "Structured pruning of a speech separation model [sepprune]."),
    "hijack": ("trustlab.systems.ipa_hijack.cli:hijack_app", "Adversarial image prompts against IP-Adapter [ipa-hijack]."),
    "harden-encoder": ("trustlab.systems.ipa_hijack.cli:harden_app",
                       "Adversarially fine-tune a CLIP image encoder [ipa-hijack]."),
    "survival": ("trustlab.systems.icfnet.cli:app", "Fit / predict a multimodal survival model [icfnet]."),
    "robust-train": ("trustlab.systems.uadat.cli:train_app", "Adversarially train a classifier [uadat]."),
    "robust-eval": ("trustlab.systems.uadat.cli:eval_app", "AutoAttack evaluation of a saved model [uadat]."),
    "protect": ("trustlab.systems.pca.cli:app", "Protect images against latent-diffusion editing [pca]."),
}

ScaleOpt = Annotated[str, typer.Option("--scale", help="smoke | quick | default | paper")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (default: the config's)")]
ProgressOpt = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal; TRUSTLAB_PROGRESS=0/1 overrides)."),
]


def _setup(progress: bool | None = None) -> None:
    from trustlab.utils.logging import setup_logging
    from trustlab.utils.progress import set_progress

    setup_logging()
    if progress is not None:
        set_progress(progress)


@app.command("list")
def list_cmd(papers: Annotated[bool, typer.Option("--papers", help="Show the paper of each system.")] = False) -> None:
    """List the systems and whether each is built in this installation.

    Example: trustlab list --papers
    """
    from rich.console import Console
    from rich.table import Table

    from trustlab.registry import SYSTEMS, available_systems

    built = set(available_systems())
    table = Table("system", "paper" if papers else "title", "status")
    for name in SYSTEMS.names():
        if name in built:
            try:
                spec = SYSTEMS.get(name)
            except Exception as exc:  # a broken system must not hide the others
                table.add_row(name, "", f"cannot load: {type(exc).__name__}: {exc}")
                continue
            table.add_row(name, spec.paper if papers else spec.title, spec.status)
        else:
            table.add_row(name, "", "not built yet")
    Console().print(table)


@app.command()
def run(
    system: Annotated[str, typer.Argument(help="System name, see `trustlab list`.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/TOML config file.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set rounds=10 (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Run a single seed.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Run seeds 0..N-1.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/SYSTEM/SCALE-HASH).")] = None,
    scale: ScaleOpt = "default",
    device: DeviceOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or local path (= --set model=...).")] = None,
    progress: ProgressOpt = None,
) -> None:
    """Run one system and write results.json, metrics.csv, plots and report.md.

    Re-running with the same config and --out resumes an interrupted run. Every setting that --set
    accepts, with its type, value and doc: `trustlab config SYSTEM [--scale S]`.

    Example: trustlab run nadafd --scale smoke --set rounds=5 --seed 1
    """
    from trustlab.registry import SYSTEMS

    name = SYSTEMS.resolve_name(system)  # fail fast (before importing torch) on an unknown name
    from trustlab.runner import run_system

    _setup(progress)
    seed_list = [seed] if seed is not None else (list(range(seeds)) if seeds is not None else None)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds} must be >= 1", "pass --seeds 3")
    overrides = list(set_ or []) + ([f"{model_key(name)}={model}"] if model is not None else [])
    record, out_dir = run_system(system, scale, config, overrides, seed_list, out, device)
    _print_outcome(record, out_dir)


#: The config key that ``trustlab run SYSTEM --model X`` sets, per system; systems not listed have no single
#: model setting and refuse ``--model``.
MODEL_KEYS: dict[str, str] = {"impq": "model", "refusal-index": "real.model", "pca": "vae_path", "uadat": "arch"}


def verb_systems(help_text: str) -> list[str]:
    """The systems a tool verb serves, from the ``[a, b]`` tag at the end of its help text."""
    tag = help_text.rsplit("[", 1)[-1].rstrip("].") if help_text.endswith("].") or help_text.endswith("]") else ""
    return [t.strip() for t in tag.split(",") if t.strip()]


def model_key(system: str) -> str:
    """The setting ``--model`` maps to for ``system``, or a one-line :class:`UserError` where it has none."""
    from trustlab.config import describe_config
    from trustlab.registry import SYSTEMS

    key = MODEL_KEYS.get(system)
    keys = {d["key"] for d in describe_config(SYSTEMS.get(system).config_cls()())}
    if key is None or key not in keys:
        verb = next((k for k, (_, h) in EXTRA_COMMANDS.items() if system in verb_systems(h)), None)
        raise UserError(f"system {system!r} has no single model setting for --model",
                        f"see `trustlab config {system}` for its model keys" +
                        (f", or run your own model with `trustlab {verb}`" if verb else ""))
    return key


def _print_outcome(record, out_dir: Path) -> None:  # noqa: ANN001
    from rich.console import Console

    from trustlab.reporting.record import summary_table

    con = Console()
    con.print(summary_table(record.summary))
    for c in record.claims:
        con.print(f"[{'green' if c['holds'] else 'red'}]{'HOLDS' if c['holds'] else 'FAILS'}[/] {c['id']}: {c['text']}")
    con.print(f"results: {out_dir / 'results.json'}\nreport:  {out_dir / 'report.md'}")


@app.command()
def reproduce(
    system: Annotated[str | None, typer.Argument(help="System to reproduce (or --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Reproduce every built system.")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds 0..N-1 (default: the config's).")] = None,
    scale: ScaleOpt = "default",
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the runs.")] = Path("runs/reproduce"),
    publish: Annotated[bool, typer.Option("--publish", help="Copy results to results/ and regenerate the READMEs.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Compare each run with the committed results/<system>/results.json "
                                                     "(relative tolerance --tol; timings excluded); exit 1 on a difference.")] = False,
    tol: Annotated[float, typer.Option("--tol", help="Relative tolerance of --check.")] = 1e-6,
    device: DeviceOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Reproduce a system's paper comparison (or all of them) and merge the runs into one report.

    Example: trustlab reproduce nadafd --seeds 3 ; trustlab reproduce --all --scale default ; trustlab reproduce pca --check
    """
    from trustlab.registry import SYSTEMS, available_systems
    from trustlab.reporting.merge import merge_report, update_readmes
    from trustlab.runner import run_system

    _setup(progress)
    if all_ == (system is not None):
        raise UserError("give either a SYSTEM or --all", "e.g. trustlab reproduce nadafd, or trustlab reproduce --all")
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds} must be >= 1", "pass --seeds 3")
    names = available_systems() if all_ else [SYSTEMS.resolve_name(system)]
    if not names:
        typer.echo("no system is built yet in this version: nothing to reproduce (see `trustlab list`)")
        return
    seed_list = list(range(seeds)) if seeds is not None else None
    done, failed = [], []
    for name in names:
        typer.echo(f"== {name} ({scale}) ==", err=True)
        if check:
            _threads_of_committed(name)
        try:
            record, out_dir = run_system(name, scale, None, [], seed_list, out / name, device)
        except UserError:
            raise
        except Exception as exc:  # keep going with the other systems; report at the end
            import traceback

            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        done.append(out_dir)
        _print_outcome(record, out_dir)
        if check:
            failed += _check_against_committed(name, record.to_dict(), tol)
        if publish:
            dest = Path("results") / name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out_dir / "results.json", dest / "results.json")
    if done:
        report = merge_report(done, out)
        typer.echo(f"report: {report}")
    if publish and done:
        for p in update_readmes():
            typer.echo(f"updated {p}")
    if failed:
        typer.echo("failed systems:\n  " + "\n  ".join(failed), err=True)
        raise typer.Exit(1)


#: Order of ``trustlab demo``: quick systems first, so the first result shows within a minute.
DEMO_ORDER = ("refusal-index", "icfnet", "gfm-extraction", "nadafd", "fvlfp", "sepprune", "impq", "pca",
              "ipa-hijack", "uadat")


def _clear_stale_demo(name: str, run_dir: Path, device: str | None) -> None:
    """Remove a demo run folder left by another config (an older version): the demo owns its folders."""
    from trustlab.config import config_hash, load_config
    from trustlab.registry import SYSTEMS
    from trustlab.utils.io import read_json

    meta = run_dir / "units" / "_meta.json"
    if not meta.is_file():
        return
    cfg = load_config(SYSTEMS.get(name).config_cls(), "quick")
    if device is not None:
        cfg.device = device
    if read_json(meta).get("config_hash") != config_hash(cfg):
        shutil.rmtree(run_dir)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the demo runs.")] = Path("runs/demo"),
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these systems (repeatable).")] = None,
    device: DeviceOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """A quick pass over every system: its experiment at the `quick` scale, then its tool verb on an
    embedded asset; writes OUT/report.md (contents, one line per system, key figures).

    Example: trustlab demo --out runs/demo ; trustlab demo --only pca --only impq
    """
    import shlex
    import time

    from rich.console import Console

    from trustlab.registry import SYSTEMS, available_systems
    from trustlab.reporting.merge import merge_report, summary_line
    from trustlab.runner import run_system

    _setup(progress)
    names = [SYSTEMS.resolve_name(n) for n in only] if only else available_systems()
    names = sorted(names, key=lambda n: DEMO_ORDER.index(n) if n in DEMO_ORDER else len(DEMO_ORDER))
    con = Console(stderr=False)
    done: list[Path] = []
    extra: dict[str, list[str]] = {}
    failed: list[str] = []
    t_start = time.time()
    for name in names:
        t0 = time.time()
        _clear_stale_demo(name, out / name, device)
        try:
            record, run_dir = run_system(name, "quick", None, [], None, out / name, device)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep going with the other systems; report at the end
            failed.append(f"{name}: quick run failed: {type(exc).__name__}: {exc}")
            con.print(f"[red]FAIL[/] {name}: {type(exc).__name__}: {exc}")
            continue
        done.append(run_dir / "results.json")
        line = summary_line(record.to_dict())
        con.print(f"[bold]{name}[/] ({time.time() - t0:.0f} s): {line['headline']} — {line['verdict']}")
        sys.stdout.flush()
        lines = extra.setdefault(name, [f"quick run: {time.time() - t0:.1f} s"])
        for i, cmd in enumerate(SYSTEMS.get(name).demo):
            verb_out = out / name / f"verb-{i}"
            shutil.rmtree(verb_out, ignore_errors=True)  # the demo owns its folders: a rerun starts the verb afresh
            argv = shlex.split(cmd.replace("{out}", str(verb_out)))
            t1 = time.time()
            try:
                rc = main(argv)
            except Exception as exc:  # noqa: BLE001
                rc, why = 1, f"{type(exc).__name__}: {exc}"
            else:
                why = f"exit code {rc}"
            verdict = "ok" if rc == 0 else f"FAILED ({why})"
            lines.append(f"tool verb `trustlab {shlex.join(argv)}`: {verdict} in {time.time() - t1:.1f} s")
            con.print(f"    trustlab {argv[0]}: {verdict} ({time.time() - t1:.1f} s)")
            sys.stdout.flush()
            if rc != 0:
                failed.append(f"{name}: trustlab {shlex.join(argv)}: {why}")
    if done:
        report_path = merge_report(done, out, extra=extra, title="trustlab demo (quick scale)")
        _print_summary(done)
        con.print(f"report: {report_path}  (demo took {time.time() - t_start:.0f} s)")
    if failed:
        typer.echo("failed:\n  " + "\n  ".join(failed), err=True)
        raise typer.Exit(1)


def _threads_of_committed(name: str) -> None:
    """Pin this process's runs to the thread count the committed results were computed with."""
    import os

    ref_path = Path("results") / name / "results.json"
    if ref_path.is_file():
        from trustlab.utils.io import read_json

        threads = read_json(ref_path).get("env", {}).get("torch_threads")
        if isinstance(threads, int) and threads > 0:
            os.environ["TRUSTLAB_THREADS"] = str(threads)


def _check_against_committed(name: str, res: dict, tol: float) -> list[str]:
    """Print how a fresh run compares with the committed results file; the failures, if any."""
    from trustlab.reporting.compare import compare_results
    from trustlab.reporting.merge import load_results

    ref_path = Path("results") / name / "results.json"
    if not ref_path.is_file():
        return [f"{name}: --check: no committed {ref_path} to compare with"]
    cmp = compare_results(res, load_results(ref_path), tol)
    typer.echo(f"check {name}: {cmp['compared']} figures compared with {ref_path}; max |diff| {cmp['max_abs_diff']:.3g}; "
               f"{len(cmp['beyond_tol'])} beyond tolerance {tol:g}; rows only here {len(cmp['only_new'])}, "
               f"only there {len(cmp['only_ref'])}")
    for setting, method, seed, metric, new, old in cmp["beyond_tol"][:20]:
        typer.echo(f"    {setting} / {method} / seed {seed}: {metric} {new!r} vs committed {old!r}")
    bad = bool(cmp["beyond_tol"] or cmp["only_new"] or cmp["only_ref"])
    return [f"{name}: differs from the committed results ({len(cmp['beyond_tol'])} figures)"] if bad else []


@app.command()
def report(
    run_dirs: Annotated[list[Path] | None, typer.Argument(help="Run folders or results.json files.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.md (default: first run's parent).")] = None,
    readme: Annotated[bool, typer.Option("--readme", help="Regenerate README tables from results/.")] = False,
) -> None:
    """Merge runs into one report file (contents, summary, key figures) and print its summary, or
    regenerate the README tables from results/.

    Example: trustlab report runs/nadafd/default-*/ --out runs/report ; trustlab report --readme
    """
    from trustlab.reporting.merge import merge_report, update_readmes

    if readme:
        for p in update_readmes():
            typer.echo(f"updated {p}")
        if not run_dirs:
            return
    if not run_dirs:
        raise UserError("no run folder given", "pass one or more run folders, e.g. trustlab report runs/nadafd/*")
    dest = out or run_dirs[0].resolve().parent
    path = merge_report(list(run_dirs), dest)
    _print_summary(run_dirs)
    typer.echo(f"report: {path}")


def _print_summary(run_dirs: list[Path]) -> None:
    """The merged report's one-line-per-system summary, as a terminal table."""
    from rich.console import Console
    from rich.table import Table

    from trustlab.reporting.merge import find_results, load_results, summary_line

    table = Table("system", "what ran", "headline figure", "verdict")
    for f in find_results(list(run_dirs)):
        line = summary_line(load_results(f))
        table.add_row(line["system"], line["ran"], line["headline"], line["verdict"])
    Console().print(table)


@app.command("config")
def config_cmd(
    system: Annotated[str, typer.Argument(help="System name, see `trustlab list`.")],
    scale: ScaleOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every setting of a system: dotted key, type, value at the scale, one-line doc.

    Any key can be set with `trustlab run SYSTEM --set KEY=VALUE` or in a --config file.

    Example: trustlab config sepprune --scale quick
    """
    from trustlab.config import describe_config
    from trustlab.registry import SYSTEMS

    name = SYSTEMS.resolve_name(system)
    rows = describe_config(SYSTEMS.get(name).config_cls().for_scale(scale))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "type", f"value ({scale})", "doc", title=f"{name} settings", show_lines=False)
    for r in rows:
        table.add_row(r["key"], r["type"], r["value"], r["doc"])
    Console(width=max(shutil.get_terminal_size((160, 20)).columns, 120)).print(table)


@app.command()
def env(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Describe the environment: versions, device, optional extras and data packages.

    Example: trustlab env --json
    """

    from trustlab.registry import available_systems
    from trustlab.utils.env import data_packages, env_info, extras_installed, git_hash

    info = env_info()
    info["git"] = git_hash()
    info["extras"] = extras_installed()
    info["data_packages"] = data_packages()
    info["systems_built"] = available_systems()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        if k == "extras":
            v = ", ".join(f"{e} {'yes' if ok else 'NO'}" for e, ok in v.items())
        elif k == "data_packages":
            typer.echo(f"{'data packages':>14}:")
            for name, d in v.items():
                typer.echo(f"{'':>16}{name:<22} {'installed' if d['installed'] else 'missing: ' + d['install']}"
                           f"  ({d['what']})")
            continue
        typer.echo(f"{k:>14}: {v}")


def _add_extra_commands() -> None:
    for name, (target, help_text) in EXTRA_COMMANDS.items():

        def forward(ctx: typer.Context, _target: str = target, _name: str = name) -> None:
            module, _, attr = _target.partition(":")
            try:
                sub = getattr(importlib.import_module(module), attr)
            except (ModuleNotFoundError, AttributeError) as exc:
                if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("trustlab"):
                    raise UserError(f"command {_name!r} needs the package {exc.name!r}, which is not installed",
                                    "install trustlab with its extras: pip install 'trustlab[all]'") from exc
                raise UserError(f"command {_name!r} is not available in this version", "see trustlab --help") from exc
            sub(args=list(ctx.args), prog_name=f"trustlab {_name}", standalone_mode=False)

        app.command(
            name,
            help=help_text,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
            add_help_option=False,
        )(forward)


_add_extra_commands()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one line and exit 2; no traceback."""
    try:
        app(args=argv, prog_name="trustlab", standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.NoArgsIsHelpError as exc:  # pragma: no cover - depends on click version
        exc.show()
        return 0
    except click.ClickException as exc:
        msg = exc.format_message().replace("\n", " ")
        hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
        print(f"error: {msg}{hint}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; finished units are saved, run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
