"""``trustlab hijack`` (attack a user's IP-Adapter pipeline) and ``trustlab harden-encoder`` (FARE fine-tuning).

Examples:
    trustlab hijack --pipeline ./sd15 --ip-adapter ./ip-adapter_sd15.safetensors --images uploads/ \\
        --target target.png --out hijack/ --eps 8/255
    trustlab harden-encoder --encoder ./sd15/image_encoder --out robust_encoder/ --eps 4/255
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from trustlab.errors import UserError

hijack_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                         context_settings={"help_option_names": ["-h", "--help"]})
harden_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                         context_settings={"help_option_names": ["-h", "--help"]})

FEATURES = ("auto", "embeds", "plus")


def _pil(img: torch.Tensor) -> Any:
    from PIL import Image

    from trustlab.diffusion.image_io import to_uint8

    return Image.fromarray(to_uint8(img))


def _read_pil(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


@hijack_app.command()
def hijack(
    pipeline: Annotated[Path, typer.Option("--pipeline", help="Local diffusers pipeline folder (pipe.save_pretrained); "
                                                              "'tiny' builds a tiny random one (demo).")],
    images: Annotated[list[Path], typer.Option("--images", help="Benign uploads: PNG/JPEG files or folders "
                                                                "(repeatable; photo:NAME = a shipped photo).")],
    target: Annotated[Path, typer.Option("--target", help="Image of the concept the uploads should trigger.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    ip_adapter: Annotated[Path | None, typer.Option("--ip-adapter", help="IP-Adapter weights (h94 layout), "
                                                    "if the pipeline has none loaded.")] = None,
    image_encoder: Annotated[Path | None, typer.Option("--image-encoder", help="CLIPVisionModelWithProjection folder "
                                                       "(e.g. a hardened one) replacing the pipeline's.")] = None,
    eps: Annotated[str, typer.Option("--eps", help="L-infinity budget, e.g. 8/255.")] = "8/255",
    steps: Annotated[int, typer.Option("--steps", help="PGD iterations.")] = 100,
    restarts: Annotated[int, typer.Option("--restarts", help="Random restarts (best kept per image).")] = 1,
    best_iterate: Annotated[bool, typer.Option("--best-iterate/--last-iterate",
                                               help="Keep each image's best iterate (default: last, as the paper).")] = False,
    features: Annotated[str, typer.Option("--features", help="auto | embeds (base adapter) | plus (hidden states).")] = "auto",
    prompt: Annotated[str, typer.Option("--prompt", help="Text prompt of the generations.")] = "a photo",
    gen_steps: Annotated[int, typer.Option("--gen-steps", help="Denoising steps per generation.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attack and the generations.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace existing outputs.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
) -> None:
    """Craft hijacking uploads against a pipeline's image encoder and score them through pipe(ip_adapter_image=...)."""
    from trustlab.diffusion.image_io import image_stem, read_image, write_png
    from trustlab.diffusion.pgd import quantize_toward
    from trustlab.runner import ensure_writable
    from trustlab.systems.ipa_hijack.method import HijackAttack
    from trustlab.systems.ipa_hijack.pipeline import (
        cosine,
        feature_fn,
        feature_kind,
        generate,
        load_pipeline,
        processor_features,
    )
    from trustlab.systems.pca.cli import collect_inputs, parse_budget
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json

    budget = parse_budget(eps)
    if steps < 1 or restarts < 1 or gen_steps < 1:
        raise UserError("--steps, --restarts and --gen-steps must be >= 1", "use e.g. --steps 100")
    if features not in FEATURES:
        raise UserError(f"unknown --features {features!r}", f"use one of {', '.join(FEATURES)}")
    inputs = collect_inputs(images)
    target_x = read_image(target)
    pixels = [read_image(p) for p in inputs]
    report_path = out / "hijack_report.json"
    if report_path.exists() and not force:
        raise UserError(f"{str(report_path)!r} already exists", "pass --force or another --out")
    ensure_writable(out)
    dev = resolve_device(device)
    if str(pipeline) == "tiny":  # a tiny random pipeline built in code and saved as a folder (demo)
        from trustlab.systems.ipa_hijack.pipeline import tiny_pipeline_folder

        pipeline, ip_adapter = tiny_pipeline_folder(out / "tiny-pipeline", seed=seed)
    pipe = load_pipeline(pipeline, ip_adapter, image_encoder, dev)
    kind = feature_kind(pipe) if features == "auto" else features
    feat = feature_fn(pipe, kind)
    enc = pipe.image_encoder
    attack = HijackAttack(budget, steps, restarts=restarts, features=feat, best_iterate=best_iterate)
    size = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    target_pil = _pil(target_x)
    e_t = processor_features(pipe, [target_pil], kind)
    gen_target = generate(pipe, target_pil, prompt, gen_steps, seed, size)
    e_gen_t = processor_features(pipe, [_pil(gen_target)], kind)
    rows: dict[str, list[torch.Tensor]] = {"upload": [], "adversarial upload": [], "generation (upload)": [],
                                           "generation (adversarial)": [], "generation (target)": []}
    entries = []
    g = torch.Generator().manual_seed(seed)
    for src, x in zip(inputs, pixels, strict=True):
        t0 = time.perf_counter()
        xb = x[None].to(dev)
        adv = quantize_toward(xb, attack(enc, xb, target_x.to(dev), g), budget)[0].cpu()
        dst = write_png(out / "adversarial" / f"{image_stem(src)}.png", adv)
        adv_pil, clean_pil = _read_pil(dst), _pil(x)  # the saved file is what gets uploaded
        e_adv, e_clean = processor_features(pipe, [adv_pil], kind), processor_features(pipe, [clean_pil], kind)
        gen_adv = generate(pipe, adv_pil, prompt, gen_steps, seed, size)
        gen_clean = generate(pipe, clean_pil, prompt, gen_steps, seed, size)
        f_adv, f_clean = (processor_features(pipe, [_pil(im)], kind) for im in (gen_adv, gen_clean))
        entry = {"input": str(src), "adversarial": str(dst), "linf_255": float((adv - x).abs().max() * 255),
                 "upload_cos_target_clean": float(cosine(e_clean, e_t)[0]),
                 "upload_cos_target_adv": float(cosine(e_adv, e_t)[0]),
                 "generation_cos_target_clean": float(cosine(f_clean, e_gen_t)[0]),
                 "generation_cos_target_adv": float(cosine(f_adv, e_gen_t)[0]),
                 "generation_cos_adv_clean": float(cosine(f_adv, f_clean)[0]),
                 "seconds": time.perf_counter() - t0}
        # hijacked: the generation is closer to the target's generation than to the clean upload's (margin 1e-3,
        # so numerically identical generations, e.g. of a random pipeline, never count)
        entry["hijacked"] = entry["generation_cos_target_adv"] > entry["generation_cos_adv_clean"] + 1e-3
        entries.append(entry)
        typer.echo(f"{src} -> {dst}  cos(upload, target) {entry['upload_cos_target_clean']:.3f} -> "
                   f"{entry['upload_cos_target_adv']:.3f}  generation cos to target "
                   f"{entry['generation_cos_target_clean']:.3f} -> {entry['generation_cos_target_adv']:.3f}"
                   f"{'  HIJACKED' if entry['hijacked'] else ''}")
        if len(rows["upload"]) < 6:
            def fit(im: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.interpolate(im[None], size=(size, size), mode="bilinear",
                                                       antialias=True)[0]

            for key, im in (("upload", fit(x)), ("adversarial upload", fit(adv)), ("generation (upload)", gen_clean),
                            ("generation (adversarial)", gen_adv), ("generation (target)", gen_target)):
                rows[key].append(im)
    from trustlab.diffusion.plots import image_grid_figure

    image_grid_figure(out / "grid.png", list(rows.items()), [image_stem(p) for p in inputs[:6]],
                      title="hijack: rows = image kind, columns = upload")
    n = len(entries)
    summary = {"success_rate": sum(e["hijacked"] for e in entries) / n,
               "upload_cos_target_clean": sum(e["upload_cos_target_clean"] for e in entries) / n,
               "upload_cos_target_adv": sum(e["upload_cos_target_adv"] for e in entries) / n,
               "generation_cos_target_clean": sum(e["generation_cos_target_clean"] for e in entries) / n,
               "generation_cos_target_adv": sum(e["generation_cos_target_adv"] for e in entries) / n}
    atomic_write_json(report_path, {"pipeline": str(pipeline), "ip_adapter": str(ip_adapter) if ip_adapter else None,
                                    "image_encoder": str(image_encoder) if image_encoder else None, "features": kind,
                                    "eps": budget, "steps": steps, "restarts": restarts, "best_iterate": best_iterate,
                                    "prompt": prompt, "gen_steps": gen_steps, "seed": seed,
                                    "target": str(target), "summary": summary, "images": entries})
    typer.echo(f"hijacked {summary['success_rate']:.0%} of {n} uploads; report {report_path}, grid {out / 'grid.png'}")


@harden_app.command()
def harden(
    encoder: Annotated[Path, typer.Option("--encoder", help="CLIPVisionModelWithProjection folder (or a pipeline "
                                                            "folder with image_encoder/).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the hardened encoder (from_pretrained loads it).")],
    eps: Annotated[str, typer.Option("--eps", help="FARE training budget, e.g. 4/255.")] = "8/255",
    steps: Annotated[int, typer.Option("--steps", help="FARE optimiser steps.")] = 200,
    inner_steps: Annotated[int, typer.Option("--inner-steps", help="Inner PGD steps per batch.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 5e-4,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of training photos (default: the "
                                                                 "photos shipped with trustlab).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of crops and inner attacks.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder's files.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
) -> None:
    """Adversarially fine-tune an image encoder with FARE, anchored to its own clean embeddings."""
    from trustlab.systems.ipa_hijack.baselines import fare_finetune
    from trustlab.systems.ipa_hijack.pipeline import cosine, load_encoder
    from trustlab.systems.pca.cli import parse_budget
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json

    budget = parse_budget(eps)
    if steps < 1 or inner_steps < 1 or batch_size < 1 or lr <= 0:
        raise UserError("--steps, --inner-steps, --batch-size must be >= 1 and --lr > 0", "use e.g. --steps 200")
    if (out / "config.json").exists() and not force:
        raise UserError(f"{str(out)!r} already holds a model", "pass --force or another --out")
    dev = resolve_device(device)
    enc, src_dir = load_encoder(encoder, dev)
    if out.resolve() == src_dir.resolve():
        raise UserError("--out is the encoder's own folder", "write the hardened encoder to another folder")
    s = int(enc.config.image_size)
    pool = _training_pool(images, s, seed)
    g = torch.Generator().manual_seed(seed)

    def sampler(n: int) -> torch.Tensor:
        return pool[torch.randint(0, pool.shape[0], (n,), generator=g)].to(dev)

    t0 = time.perf_counter()
    robust = fare_finetune(enc, sampler, steps, budget, inner_steps, batch_size, lr, seed)
    held = _heldout(s).to(dev)
    from trustlab.diffusion.ip_adapter import image_embeds
    from trustlab.diffusion.pgd import linf_pgd

    with torch.no_grad():
        e0 = image_embeds(enc, held)
        drift = float(cosine(image_embeds(robust, held), e0).mean())

    def attacked_cos(model: Any) -> float:
        x_adv = linf_pgd(held, lambda xa, st: (image_embeds(model, xa) - e0).pow(2).sum(), budget, 2.5 * budget / 20,
                         20, maximize=True, random_start=True, generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            return float(cosine(image_embeds(model, x_adv), e0).mean())

    report = {"encoder": str(src_dir), "eps": budget, "steps": steps, "inner_steps": inner_steps, "lr": lr,
              "batch_size": batch_size, "images": str(images) if images else "trustlab training photos",
              "clean_cos_to_original": drift, "attacked_cos_original": attacked_cos(enc),
              "attacked_cos_hardened": attacked_cos(robust), "seconds": time.perf_counter() - t0,
              "check": "cos(phi(x_adv), phi_orig(x)) under a 20-step untargeted PGD at eps on 32 held-out crops"}
    out.mkdir(parents=True, exist_ok=True)
    robust.save_pretrained(str(out))
    for name in ("preprocessor_config.json",):
        for cand in (src_dir / name, src_dir.parent / "feature_extractor" / name):
            if cand.is_file():
                shutil.copyfile(cand, out / name)
                break
    atomic_write_json(out / "harden_report.json", report)
    typer.echo(f"wrote {out} (CLIPVisionModelWithProjection): clean cos to original {drift:.3f}; under attack "
               f"{report['attacked_cos_original']:.3f} (original) -> {report['attacked_cos_hardened']:.3f} (hardened)")


def _training_pool(folder: Path | None, size: int, seed: int, n: int = 512) -> torch.Tensor:
    """Random square crops (resized to ``size``) of the user's photos, or of trustlab's training photos."""
    from trustlab.data.photos import TRAIN_PHOTOS, photo_crops

    if folder is None:
        return photo_crops(TRAIN_PHOTOS, n, size, seed=seed)
    from trustlab.diffusion.image_io import read_image
    from trustlab.systems.pca.cli import collect_inputs

    photos = [read_image(f) for f in collect_inputs([folder])[:64]]
    rng = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[-2:]
        side = int(min(h, w) * (0.3 + 0.7 * float(torch.rand(1, generator=rng))))
        top = int(torch.randint(0, h - side + 1, (1,), generator=rng))
        left = int(torch.randint(0, w - side + 1, (1,), generator=rng))
        crop = img[:, top:top + side, left:left + side][None]
        out.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0])
    return torch.stack(out).clamp(0, 1)


def _heldout(size: int) -> torch.Tensor:
    from trustlab.data.photos import HELDOUT_PHOTOS, photo_crops

    return photo_crops(HELDOUT_PHOTOS, 32, size, seed=777)
