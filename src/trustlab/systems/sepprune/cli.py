"""``trustlab prune --model MODULE:FACTORY --data DIR|embedded --macs 0.5 --out DIR``: SepPrune on any separator.

The model is any ``nn.Module`` mapping mixtures ``(batch, time)`` to sources ``(batch, speakers, time)``,
built by calling ``FACTORY()`` from ``MODULE`` (an importable module or ``path/to/file.py``), with
``--weights`` (a safetensors state dict) loaded into it. torch-pruning's dependency graph finds the
channel groups; SepPrune learns which channels to keep under the MACs budget; the pruned model is saved
as ``DIR/pruned.safetensors`` + ``DIR/pruned.json`` (reload: ``trustlab.systems.sepprune.load_pruned(DIR)``)
with ``DIR/prune_report.json`` (MACs, parameters, CPU latency and SI-SNRi before/after).

Examples:
    trustlab prune --model mypkg.models:make_separator --weights sep.safetensors --data Libri2Mix/dev --macs 0.5 --out pruned/
    trustlab prune --model trustlab.systems.sepprune.tool:demo_separator --data embedded --macs 0.5 --out pruned/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def prune(
    model: Annotated[str, typer.Option("--model", help="MODULE:FACTORY returning the separator nn.Module "
                                       "(MODULE importable, or path/to/file.py).")],
    data: Annotated[str, typer.Option("--data", help="Folder with mix*/, s1/, s2/ WAVs (last fifth = validation), "
                                      "or 'embedded' (built-in pseudo-speech).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    macs: Annotated[float, typer.Option("--macs", help="Kept fraction of the dense MACs, in (0, 1).")] = 0.5,
    weights: Annotated[str | None, typer.Option("--weights", help="safetensors state dict for the model.")] = None,
    method: Annotated[str, typer.Option("--method", help="sepprune (released recipe) | sepprune_l1init | l1 | "
                                        "hrank | random")] = "sepprune",
    steps: Annotated[int, typer.Option("--steps", help="Mask-learning iterations (paper 500).")] = 100,
    mask_lr: Annotated[float | None, typer.Option("--mask-lr", help="Adam lr on the mask scores "
                                                  "(default: 0.1 sepprune, 0.02 sepprune_l1init).")] = None,
    finetune_steps: Annotated[int, typer.Option("--finetune-steps", help="Fine-tuning steps after pruning.")] = 0,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Mixtures per step.")] = 4,
    segment: Annotated[float, typer.Option("--segment", help="Training/validation segment length (s).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the masks' noise, data order and crops.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "cpu",
) -> None:
    """Prune a speech-separation model to a MACs budget with SepPrune (torch-pruning dependency graph)."""
    from trustlab.systems.sepprune.tool import prune_separator

    r = prune_separator(model, data, macs, out, weights=weights, method=method, steps=steps, mask_lr=mask_lr,
                        finetune_steps=finetune_steps, lr=lr, batch_size=batch_size, segment_s=segment, seed=seed,
                        device=device)
    d, p = r["dense"], r["pruned"]
    typer.echo(f"{method}: {len(r['groups'])} channel groups; MACs {d['macs_per_s'] / 1e6:.2f} -> "
               f"{p['macs_per_s'] / 1e6:.2f} M per second of audio ({r['macs_ratio']:.3f}); params {d['params']} -> "
               f"{p['params']} ({r['params_ratio']:.3f}); CPU latency {d['latency_s'] * 1e3:.1f} -> "
               f"{p['latency_s'] * 1e3:.1f} ms ({r['latency_ratio']:.2f}x)")
    typer.echo(f"validation SI-SNRi: dense {d['si_snri_db']:.2f} dB, pruned {p['si_snri_db_before_finetune']:.2f} dB"
               + (f", after {r['finetune_steps']} fine-tuning steps {p['si_snri_db']:.2f} dB" if r["finetune_steps"] else ""))
    typer.echo(f"wrote {out / 'pruned.safetensors'}, {out / 'pruned.json'}, {out / 'prune_report.json'} "
               f"(reload: trustlab.systems.sepprune.load_pruned({str(out)!r}))")
