"""``trustlab protect IMAGES... --out DIR --eps 8/255``: protect photos against LDM editing with PCA.

PNG/JPEG in (files or folders of them), PNG out with the same size and base name; inputs are never
overwritten. Each image is attacked at native resolution (padded by edge replication to a multiple of
the VAE's down-sampling factor, then cropped back), rounded to 8 bits *toward* the original so the
saved file keeps ||delta||_inf <= eps, and reported (L-infinity in /255, PSNR, seconds) in
``DIR/protect_report.json``.

Examples:
    trustlab protect photo.jpg --out protected/
    trustlab protect photos/ --out protected/ --eps 16/255 --vae ./stable-diffusion-v1-5/vae --device cuda
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
import typer

from trustlab.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})

METHODS = ("pca", "pca-plus", "photoguard")


def parse_budget(text: str, name: str = "--eps") -> float:
    """``"8/255"`` or ``"0.03"`` -> float in (0, 1]; a one-line :class:`UserError` otherwise."""
    try:
        val = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise UserError(f"{name} {text!r} is not a number", f"write e.g. {name} 8/255 or {name} 0.03") from exc
    if not 0 < val <= 1:
        raise UserError(f"{name} {text!r} is outside (0, 1]", "budgets are in [0, 1] pixel units, e.g. 8/255")
    return val


def collect_inputs(items: list[Path]) -> list[Path]:
    """Files as given plus the PNG/JPEG files directly inside given folders (sorted)."""
    from trustlab.diffusion.image_io import READABLE

    files: list[Path] = []
    for p in items:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in READABLE)
            if not found:
                raise UserError(f"folder {str(p)!r} holds no PNG/JPEG images", "pass image files or another folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"image {str(p)!r} does not exist", "check the path")
    return files


def plan_outputs(inputs: list[Path], out: Path, suffix: str, force: bool) -> list[Path]:
    """Output paths ``out/<stem><suffix>.png``; refuses to overwrite an input, duplicates, or (without --force) files."""
    resolved_inputs = {p.resolve() for p in inputs}
    outputs: list[Path] = []
    seen: set[Path] = set()
    for p in inputs:
        o = out / f"{p.stem}{suffix}.png"
        r = o.resolve()
        if r in resolved_inputs:
            raise UserError(f"output {str(o)!r} would overwrite the input image {str(p)!r}",
                            "pass another --out folder or a --suffix")
        if r in seen:
            raise UserError(f"two inputs would both be written to {str(o)!r}", "rename one or protect them separately")
        if o.exists() and not force:
            raise UserError(f"output {str(o)!r} already exists", "pass --force to replace earlier outputs")
        seen.add(r)
        outputs.append(o)
    return outputs


def load_vae(vae: str, device: torch.device) -> Any:
    """``tiny`` (the cached default tiny VAE, trained on first use) or a local diffusers VAE folder."""
    from trustlab.diffusion.vae import TinyVAESpec, load_or_train_vae, load_pretrained_vae
    from trustlab.utils.logging import get_logger

    if vae == "tiny":
        get_logger(__name__).info("using the tiny default VAE (trained and cached on first use, a few minutes)")
        return load_or_train_vae(TinyVAESpec(), device)
    return load_pretrained_vae(vae, device)


def protect_image(vae: Any, x: torch.Tensor, attack: Any, eps: float) -> torch.Tensor:
    """Protect one ``(3, H, W)`` image in [0, 1] at native size; returns the 8-bit-rounded result."""
    from trustlab.diffusion.pgd import quantize_toward
    from trustlab.diffusion.vae import downsample_factor

    f = downsample_factor(vae)
    h, w = x.shape[-2:]
    ph, pw = (-h) % f, (-w) % f
    xb = x[None]
    xp = F.pad(xb, (0, pw, 0, ph), mode="replicate") if ph or pw else xb
    adv = attack(vae, xp, torch.Generator().manual_seed(0))[..., :h, :w]
    return quantize_toward(xb, adv, eps)[0]


@app.command()
def protect(
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    eps: Annotated[str, typer.Option("--eps", help="L-infinity budget, e.g. 8/255.")] = "8/255",
    steps: Annotated[int, typer.Option("--steps", help="PGD iterations.")] = 40,
    alpha: Annotated[str | None, typer.Option("--alpha", help="Step size (default eps/8).")] = None,
    method: Annotated[str, typer.Option("--method", help="pca | pca-plus | photoguard")] = "pca",
    vae: Annotated[str, typer.Option("--vae", help="'tiny' or a local diffusers AutoencoderKL folder.")] = "tiny",
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to each output's base name.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace existing outputs (never inputs).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
) -> None:
    """Protect images against latent-diffusion editing with the Posterior Collapse Attack."""
    from trustlab.diffusion.image_io import read_image, write_png
    from trustlab.metrics.image import psnr
    from trustlab.runner import ensure_writable
    from trustlab.systems.pca.baselines import PhotoGuardEncoderAttack
    from trustlab.systems.pca.method import PosteriorCollapseAttack
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json
    from trustlab.utils.progress import progress

    budget = parse_budget(eps)
    step = parse_budget(alpha, "--alpha") if alpha is not None else budget / 8
    if steps < 1:
        raise UserError(f"--steps {steps} must be >= 1", "use e.g. --steps 40")
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}", f"use one of {', '.join(METHODS)}")
    inputs = collect_inputs(images)
    outputs = plan_outputs(inputs, out, suffix, force)
    pixels = [read_image(p) for p in inputs]  # fail on any unreadable image before writing anything
    ensure_writable(out)
    dev = resolve_device(device)
    model = load_vae(vae, dev)
    if method == "photoguard":
        attack: Any = PhotoGuardEncoderAttack(budget, step, steps)
    else:
        attack = PosteriorCollapseAttack(budget, step, steps, v=1e-8 if method == "pca" else 1.0,
                                         ascend=method == "pca-plus")
    report = []
    for src, dst, x in progress(list(zip(inputs, outputs, pixels, strict=True)), desc="protect"):
        t0 = time.perf_counter()
        adv = protect_image(model, x.to(dev), attack, budget).cpu()
        write_png(dst, adv)
        entry = {"input": str(src), "output": str(dst), "size": [int(x.shape[-1]), int(x.shape[-2])],
                 "linf_255": float((adv - x).abs().max() * 255), "psnr_db": float(psnr(adv[None], x[None])[0]),
                 "seconds": time.perf_counter() - t0}
        report.append(entry)
        typer.echo(f"{src} -> {dst}  L_inf={entry['linf_255']:.0f}/255  PSNR={entry['psnr_db']:.1f} dB  "
                   f"{entry['seconds']:.1f} s")
    atomic_write_json(out / "protect_report.json", {"method": method, "eps": budget, "alpha": step, "steps": steps,
                                                    "vae": vae, "images": report})
