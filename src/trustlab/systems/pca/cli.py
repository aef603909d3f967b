"""``trustlab protect IMAGES... --out DIR --eps 8/255``: protect photos against LDM editing with PCA.

PNG/JPEG in (files or folders of them), PNG (or, with ``--format jpeg``, JPEG) out with the same size and
base name; inputs are never overwritten. Each image is attacked at native resolution (padded by edge
replication to a multiple of the VAE's down-sampling factor, then cropped back), encoded tile by tile
when larger than ``--tile`` (peak memory of one tile, see :mod:`trustlab.diffusion.tiling`), rounded to
8 bits *toward* the original so the saved file keeps ||delta||_inf <= eps (for JPEG output the
perturbation is corrected until the *decoded* JPEG keeps the bound), and reported (L-infinity in /255,
PSNR, seconds) in ``DIR/protect_report.json``.

The default VAE is the small SD-topology VAE shipped with trustlab (:mod:`trustlab.diffusion.default_vae`);
protection computed against it is only shown to hold against VAEs like it, so the command warns and names
``--vae`` for a real Stable Diffusion VAE folder.

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
FORMATS = {"png": ".png", "jpeg": ".jpg"}
DEFAULT_VAE_WARNING = ("warning: the default VAE is trustlab's small SD-topology VAE; protection is only shown "
                       "against VAEs like it. Pass --vae DIR with the vae/ folder of the pipeline you protect "
                       "against (e.g. a local Stable Diffusion checkout).")


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
    from trustlab.diffusion.image_io import READABLE, is_embedded

    files: list[Path] = []
    for p in items:
        if is_embedded(p):
            files.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in READABLE)
            if not found:
                raise UserError(f"folder {str(p)!r} holds no PNG/JPEG images", "pass image files or another folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"image {str(p)!r} does not exist", "check the path")
    return files


def plan_outputs(inputs: list[Path], out: Path, suffix: str, force: bool, ext: str = ".png") -> list[Path]:
    """Output paths ``out/<stem><suffix><ext>``; refuses to overwrite an input, duplicates, or (without --force) files."""
    from trustlab.diffusion.image_io import image_stem

    resolved_inputs = {p.resolve() for p in inputs}
    outputs: list[Path] = []
    seen: set[Path] = set()
    for p in inputs:
        o = out / f"{image_stem(p)}{suffix}{ext}"
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
    """``default`` (the shipped SD-topology VAE; ``tiny`` is an alias) or a local diffusers VAE folder.

    The VAE is kept in channels-last memory order: the same network (gradients agree to float rounding,
    every sign of the PGD step the same), about a quarter less CPU time per step on a 512² photo at one
    thread (no difference measured at two).
    """
    from trustlab.diffusion.default_vae import load_default_vae
    from trustlab.diffusion.vae import load_pretrained_vae

    model = load_default_vae(device) if vae in ("default", "tiny") else load_pretrained_vae(vae, device)
    return model.to(memory_format=torch.channels_last)


def jpeg_bytes(img: torch.Tensor, quality: int) -> bytes:
    """JPEG encoding (4:4:4, no chroma subsampling) of a ``(3, H, W)`` image in [0, 1] on the 8-bit grid."""
    import io

    from PIL import Image

    from trustlab.diffusion.image_io import to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> torch.Tensor:
    """Decoded JPEG bytes as ``(3, H, W)`` in [0, 1]."""
    import io

    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def jpeg_within_budget(x: torch.Tensor, adv: torch.Tensor, eps: float, quality: int,
                       rounds: int = 12) -> tuple[bytes, torch.Tensor]:
    """JPEG bytes of (a corrected) ``adv`` whose *decoded* pixels keep ``||dec - x||_inf <= eps``.

    Each round moves the pixels whose decoded value overshoots the budget back by the overshoot; if that
    has not converged after ``rounds``, the perturbation is shrunk towards ``x`` until it holds.

    Raises:
        UserError: even the unprotected image does not survive JPEG at this quality within the budget.
    """
    budget = (torch.floor(torch.tensor(eps * 255.0 + 1e-6)) / 255.0).item() + 1e-6
    x, cur = x.cpu(), adv.cpu().clone()
    for _ in range(rounds):
        data = jpeg_bytes(cur, quality)
        dec = decode_jpeg(data)
        over = ((dec - x).abs() - budget).clamp_min(0)
        if float(over.max()) == 0.0:
            return data, dec
        back = torch.where(over > 0, over + 1 / 255, torch.zeros_like(over)) * (dec - x).sign()
        cur = (torch.round((cur - back) * 255) / 255).clamp(0, 1)
    for s in (0.75, 0.5, 0.25, 0.0):
        data = jpeg_bytes(x + s * (cur - x), quality)
        dec = decode_jpeg(data)
        if float((dec - x).abs().max()) <= budget:
            return data, dec
    raise UserError(f"JPEG at quality {quality} changes the image by more than eps on its own",
                    "use a higher --quality (e.g. 98), a larger --eps, or --format png")


def protect_image(vae: Any, x: torch.Tensor, attack: Any, eps: float) -> torch.Tensor:
    """Protect one ``(3, H, W)`` image in [0, 1] at native size; returns the 8-bit-rounded result."""
    from trustlab.diffusion.pgd import quantize_toward
    from trustlab.diffusion.vae import downsample_factor

    f = downsample_factor(vae)
    h, w = x.shape[-2:]
    ph, pw = (-h) % f, (-w) % f
    xb = x[None]
    xp = F.pad(xb, (0, pw, 0, ph), mode="replicate") if ph or pw else xb
    xp = xp.contiguous(memory_format=torch.channels_last)  # matches the VAE's layout (see load_vae)
    adv = attack(vae, xp, torch.Generator().manual_seed(0))[..., :h, :w]
    return quantize_toward(xb, adv, eps)[0]


@app.command()
def protect(
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files or folders of them (photo:NAME: a photo "
                                                      "shipped with trustlab, e.g. photo:chelsea).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    eps: Annotated[str, typer.Option("--eps", help="L-infinity budget, e.g. 8/255.")] = "8/255",
    steps: Annotated[int, typer.Option("--steps", help="PGD iterations.")] = 40,
    alpha: Annotated[str | None, typer.Option("--alpha", help="Step size (default eps/8).")] = None,
    method: Annotated[str, typer.Option("--method", help="pca | pca-plus | photoguard")] = "pca",
    vae: Annotated[str, typer.Option("--vae", help="'default' (shipped small VAE) or a local diffusers "
                                                   "AutoencoderKL folder.")] = "default",
    tile: Annotated[int, typer.Option("--tile", help="Encode images larger than this tile by tile (pixels, "
                                                     "multiple of 8); peak memory is one tile's.")] = 512,
    margin: Annotated[int, typer.Option("--margin", help="Context pixels around each tile.")] = 32,
    fmt: Annotated[str, typer.Option("--format", help="png | jpeg (the decoded JPEG keeps the budget).")] = "png",
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality (with --format jpeg).")] = 95,
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
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}", "use png or jpeg")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality {quality} is outside [1, 100]", "use e.g. --quality 95")
    if tile < 64 or tile % 8 or margin < 0 or margin % 8:
        raise UserError(f"--tile {tile} / --margin {margin} must be multiples of 8 (tile >= 64, margin >= 0)",
                        "use e.g. --tile 512 --margin 32")
    inputs = collect_inputs(images)
    outputs = plan_outputs(inputs, out, suffix, force, FORMATS[fmt])
    pixels = [read_image(p) for p in inputs]  # fail on any unreadable image before writing anything
    ensure_writable(out)
    dev = resolve_device(device)
    if vae in ("default", "tiny"):
        typer.echo(DEFAULT_VAE_WARNING, err=True)
    model = load_vae(vae, dev)
    if method == "photoguard":
        attack: Any = PhotoGuardEncoderAttack(budget, step, steps, tile=tile, margin=margin)
    else:
        attack = PosteriorCollapseAttack(budget, step, steps, v=1e-8 if method == "pca" else 1.0,
                                         ascend=method == "pca-plus", tile=tile, margin=margin)
    report = []
    for src, dst, x in progress(list(zip(inputs, outputs, pixels, strict=True)), desc="protect"):
        t0 = time.perf_counter()
        adv = protect_image(model, x.to(dev), attack, budget).cpu()
        if fmt == "jpeg":
            data, adv = jpeg_within_budget(x, adv, budget, quality)
            from trustlab.utils.io import atomic_write_bytes

            atomic_write_bytes(dst, data)
        else:
            write_png(dst, adv)
        entry = {"input": str(src), "output": str(dst), "size": [int(x.shape[-1]), int(x.shape[-2])],
                 "linf_255": float((adv - x).abs().max() * 255), "psnr_db": float(psnr(adv[None], x[None])[0]),
                 "seconds": time.perf_counter() - t0}
        report.append(entry)
        typer.echo(f"{src} -> {dst}  L_inf={entry['linf_255']:.0f}/255  PSNR={entry['psnr_db']:.1f} dB  "
                   f"{entry['seconds']:.1f} s")
    atomic_write_json(out / "protect_report.json", {"method": method, "eps": budget, "alpha": step, "steps": steps,
                                                    "vae": vae, "tile": tile, "margin": margin, "format": fmt,
                                                    "quality": quality if fmt == "jpeg" else None,
                                                    "images": report})
