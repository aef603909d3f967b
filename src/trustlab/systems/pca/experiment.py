"""PCA experiment: every method at equal eps on held-out photo crops, through a real edit and the VAE round trip.

Settings: ``vae=tiny-a`` (attack crafted and evaluated on the surrogate VAE) and ``vae=tiny-b``
(the same protected images evaluated on a second VAE of another architecture and seed: transfer).
On ``tiny-a`` every protected image is also *edited* by diffusers' ``StableDiffusionImg2ImgPipeline``
built from our VAE and latent UNet (:mod:`trustlab.diffusion.edit`), at each strength in
``edit_strengths`` and under each prompt of ``edit_prompts`` (our tiny text encoder), with the clean image's edit
paired by seed: ``edit_psnr_orig`` = PSNR(edit(x + delta), x) (PCA+'s objective) and ``edit_psnr_clean``
= PSNR(edit(x + delta), edit(x)) (PCA-'s objective). Comparisons are per-image paired differences with
95 % t-intervals ("tie" when the interval covers 0), in ``extra.paired`` and the notes. The key figure
``distance_vs_eps.png`` is the round-trip PSNR to the clean reconstruction against eps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from trustlab.diffusion.edit import edit, img2img_pipeline
from trustlab.diffusion.pgd import quantize_toward
from trustlab.diffusion.profiling import Measure
from trustlab.diffusion.unet import make_scheduler
from trustlab.diffusion.vae import TinyVAESpec, decode, load_or_train_vae, load_pretrained_vae, posterior
from trustlab.metrics.image import psnr, ssim
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.pca.baselines import AdvDMAttack, PhotoGuardEncoderAttack, RandomNoise
from trustlab.systems.pca.config import Config
from trustlab.systems.pca.data import heldout_crops, train_crops
from trustlab.systems.pca.method import PosteriorCollapseAttack, kl_to_standard_normal
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

METHODS = ("none", "random", "photoguard", "photoguard_grey", "advdm", "pca", "pca_plus")
CURVE_METHODS = ("random", "photoguard", "pca", "pca_plus")
#: (method, baseline) pairs compared per image.
PAIRS = (("pca", "photoguard"), ("pca", "advdm"), ("pca", "random"), ("pca_plus", "photoguard"),
         ("pca_plus", "advdm"), ("photoguard", "photoguard_grey"))


def build_models(cfg: Config, device: torch.device) -> dict[str, Any]:
    """Surrogate VAE (+ UNet for AdvDM) and the transfer-target VAE (cached by recipe)."""
    spec_a = TinyVAESpec(block_out_channels=tuple(cfg.vae_channels), steps=cfg.vae_steps,
                         image_size=cfg.image_size, n_train=cfg.vae_n_train, seed=0)
    spec_b = TinyVAESpec(block_out_channels=tuple(cfg.vae_b_channels), steps=cfg.vae_b_steps,
                         image_size=cfg.image_size, n_train=cfg.vae_n_train, seed=1)
    models: dict[str, Any] = {}
    if cfg.vae_path:
        models["a"] = load_pretrained_vae(cfg.vae_path, device)
        models["a_name"] = "user"
    else:
        models["a"] = load_or_train_vae(spec_a, device)
        models["a_name"] = "tiny-a"
    models["b"] = load_or_train_vae(spec_b, device)
    images = train_crops(min(cfg.vae_n_train, 512), cfg.image_size, seed=0).to(device)
    with torch.no_grad():
        mean, _ = posterior(models["a"], images[:256])
    scaling = float(1.0 / mean.std().clamp_min(1e-6))
    models["scaling"] = scaling
    if cfg.unet_path:
        from diffusers import UNet2DConditionModel

        models["unet"] = UNet2DConditionModel.from_pretrained(cfg.unet_path).to(device).eval().requires_grad_(False)
        models["cond"] = torch.zeros(1, 77, models["unet"].config.cross_attention_dim)
    elif cfg.vae_path:
        models["unet"] = None
    else:
        from trustlab.data.photos import TRAIN_PHOTOS
        from trustlab.diffusion.text import TextUNetSpec, caption, embed, load_or_train_text_unet

        captions = [caption(TRAIN_PHOTOS[i % len(TRAIN_PHOTOS)]) for i in range(images.shape[0])]
        tspec = TextUNetSpec(block_out_channels=tuple(cfg.unet_channels), steps=cfg.unet_steps)
        models["unet"], models["text"], models["unet_train_loss"] = load_or_train_text_unet(
            tspec, models["a"], spec_a.recipe(), images, captions, scaling, device)
        with torch.no_grad():
            models["cond"] = embed(models["text"], ["a photo"])
    models["scheduler"] = make_scheduler()
    return models


def make_attack(method: str, cfg: Config, models: dict[str, Any], steps: int | None = None) -> Any:
    """The attack object of ``method`` at the config's budget (``steps`` overrides the iterations)."""
    cfg = replace(cfg, steps=steps or cfg.steps)
    if method == "pca":
        return PosteriorCollapseAttack(cfg.eps, cfg.alpha, cfg.steps, v=cfg.v, ascend=False)
    if method == "pca_plus":
        return PosteriorCollapseAttack(cfg.eps, cfg.alpha, cfg.steps, v=1.0, ascend=True)
    if method == "photoguard":
        return PhotoGuardEncoderAttack(cfg.eps, cfg.alpha, cfg.steps, target="zero")
    if method == "photoguard_grey":
        return PhotoGuardEncoderAttack(cfg.eps, cfg.alpha, cfg.steps, target="grey")
    if method == "advdm":
        return AdvDMAttack(models["unet"], models["scheduler"], models["cond"], models["scaling"], cfg.eps,
                           cfg.alpha, cfg.steps)
    if method == "random":
        return RandomNoise(cfg.eps)
    raise KeyError(method)


@torch.no_grad()
def evaluate(vae: Any, x: torch.Tensor, x_adv: torch.Tensor, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    """Reconstruction damage (posterior sample, as img2img pipelines encode), latent distance, visibility.

    ``recon_psnr``/``recon_ssim`` compare the reconstruction of the protected image with that of the clean
    image under the same sampling noise (the paper's objective 2: d(f(x + delta), f(x))), so the VAE's own
    reconstruction error does not mask the attack; ``*_orig`` compare it with the clean image itself.
    """
    m0, lv0 = posterior(vae, x)
    m1, lv1 = posterior(vae, x_adv)
    noise = torch.randn(m0.shape, generator=torch.Generator().manual_seed(seed)).to(m0.device)
    rec0 = decode(vae, m0 + torch.exp(0.5 * lv0) * noise)
    rec = decode(vae, m1 + torch.exp(0.5 * lv1) * noise)
    metrics = {
        "recon_psnr": float(psnr(rec, rec0).mean()),
        "recon_ssim": float(ssim(rec, rec0).mean()),
        "recon_psnr_orig": float(psnr(rec, x).mean()),
        "recon_ssim_orig": float(ssim(rec, x).mean()),
        "latent_dist": float(((m1 - m0).flatten(1).norm(dim=1) / m0.flatten(1).norm(dim=1).clamp_min(1e-8)).mean()),
        "pert_psnr": float(psnr(x_adv, x).mean()),
        "pert_ssim": float(ssim(x_adv, x).mean()),
        "linf_255": float((x_adv - x).abs().amax() * 255),
        "kl": float(kl_to_standard_normal(m1, lv1).mean()),
    }
    metrics["per_image_recon_psnr"] = psnr(rec, rec0).cpu().tolist()
    return metrics, rec


@torch.no_grad()
def evaluate_edit(pipe: Any, x: torch.Tensor, x_adv: torch.Tensor, conds: list[torch.Tensor], cfg: Config,
                  seed: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Per-image edit PSNRs averaged over prompts and strengths (clean and protected edits paired by seed)."""
    to_orig, to_clean = [], []
    first = None
    for pi, cond in enumerate(conds):
        for strength in cfg.edit_strengths:
            s = 1000 * seed + 10 * pi + int(100 * strength)
            e0 = edit(pipe, x, cond, strength, cfg.edit_steps, s)
            e1 = edit(pipe, x_adv, cond, strength, cfg.edit_steps, s)
            to_orig.append(psnr(e1, x))
            to_clean.append(psnr(e1, e0))
            if first is None:
                first = e1
    po, pc = torch.stack(to_orig).mean(0), torch.stack(to_clean).mean(0)
    return {"edit_psnr_orig": float(po.mean()), "edit_psnr_clean": float(pc.mean()),
            "per_image_edit_psnr_orig": po.cpu().tolist(), "per_image_edit_psnr_clean": pc.cpu().tolist()}, first


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean of ``a - b`` with a 95 % t-interval; verdict ``lower``/``higher``/``tie`` (tie: interval covers 0)."""
    from scipy import stats

    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    n = d.numel()
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std(unbiased=True) / n**0.5) if n > 1 else float("inf")
    lo, hi = mean - half, mean + half
    verdict = "tie" if lo <= 0 <= hi else ("lower" if hi < 0 else "higher")
    return {"mean_diff": mean, "ci95": [lo, hi], "n": n, "verdict": verdict}


@torch.no_grad()
def unet_denoising_loss(models: dict[str, Any], images: torch.Tensor, n_draws: int = 4) -> dict[str, float]:
    """Held-out LDM loss of the UNet (fixed t, noise draws) and of the trivial zero predictor (= E||n||^2)."""
    from trustlab.diffusion.unet import diffusion_loss

    mean, _ = posterior(models["a"], images)
    z = mean * models["scaling"]
    g = torch.Generator().manual_seed(123)
    loss = torch.stack([diffusion_loss(models["unet"], models["scheduler"], z, models["cond"], g).mean()
                        for _ in range(n_draws)]).mean()
    return {"unet_heldout_denoising_loss": float(loss), "zero_predictor_loss": 1.0}


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run every method on every seed; add rows, a figure grid and the issue's claims."""
    rec = ctx.record(cfg)
    device = ctx.device
    models = build_models(cfg, device)
    a_name = models["a_name"]
    methods = [m for m in METHODS if m != "advdm" or models.get("unet") is not None]
    grid_rows: list[list[torch.Tensor]] = []
    pipe = None
    if models.get("unet") is not None and cfg.edit_strengths:
        pipe = img2img_pipeline(models["a"], models["unet"], models["scaling"])
        if "text" in models:
            from trustlab.diffusion.text import embed

            with torch.no_grad():
                conds = [embed(models["text"], [p]) for p in cfg.edit_prompts]
        else:  # a user UNet without its text encoder: the zero conditioning only
            conds = [models["cond"]]
        rec.extra["unet"] = unet_denoising_loss(models, heldout_crops(64, cfg.image_size, 999).to(device))
        rec.extra["unet"]["unet_final_train_loss"] = models.get("unet_train_loss")
        rec.notes.append("edit: diffusers StableDiffusionImg2ImgPipeline with our VAE, UNet and text encoder, "
                         f"strengths {cfg.edit_strengths}, prompts {cfg.edit_prompts}, {cfg.edit_steps} DDIM steps; "
                         "UNet held-out denoising loss ('a photo') "
                         f"{rec.extra['unet']['unet_heldout_denoising_loss']:.3f} (zero predictor: 1.0)")
    per_image: dict[str, dict[str, list[float]]] = {}
    for seed in cfg.seeds:
        x = heldout_crops(cfg.n_eval, cfg.image_size, seed).to(device)
        x = torch.round(x * 255) / 255  # start from 8-bit images, as files are

        for method in methods:
            def unit(method: str = method, x: torch.Tensor = x, seed: int = seed) -> dict[str, Any]:
                gen = torch.Generator().manual_seed(seed)
                if method == "none":
                    x_adv, secs, cpu, mem = x.clone(), 0.0, 0.0, 0.0
                else:
                    attack = make_attack(method, cfg, models)
                    with Measure(device, track_memory=False) as meas:
                        x_adv = attack(models["a"], x, gen)
                    secs, cpu = meas.seconds / x.shape[0], meas.cpu_seconds / x.shape[0]
                    # peak memory of one image through one attack step (tracked separately: tracking slows ops)
                    with Measure(device) as mem_meas:
                        make_attack(method, cfg, models, steps=1)(models["a"], x[:1], torch.Generator().manual_seed(0))
                    mem = mem_meas.peak_mb
                x_adv = quantize_toward(x, x_adv, cfg.eps)
                ma, rec_a = evaluate(models["a"], x, x_adv, seed)
                mb, rec_b = evaluate(models["b"], x, x_adv, seed)
                shown = rec_a
                if pipe is not None:
                    me, shown = evaluate_edit(pipe, x, x_adv, conds, cfg, seed)
                    ma.update(me)
                return {"a": {**ma, "time_per_image_s": secs, "cpu_per_image_s": cpu, "peak_mem_mb": mem}, "b": mb,
                        "images": [x_adv[:4].cpu().tolist(), shown[:4].cpu().tolist()] if seed == cfg.seeds[0]
                        else None}

            res = ctx.unit(f"{method}/seed={seed}", unit, seed=seed)
            for key in [k for k in res["a"] if k.startswith("per_image_")]:
                per_image.setdefault(key[len("per_image_"):], {}).setdefault(method, []).extend(res["a"].pop(key))
            res["b"].pop("per_image_recon_psnr", None)
            rec.add_row(f"vae={a_name}", method, seed, **res["a"])
            rec.add_row("vae=tiny-b", method, seed, **res["b"])
            if res.get("images"):
                adv, rc = (torch.tensor(t) for t in res["images"])
                if not grid_rows:
                    grid_rows.append(list(x[:4].cpu()))
                grid_rows.append(list(adv))
                grid_rows.append(list(rc))
    if grid_rows:
        from trustlab.diffusion.plots import image_grid_figure

        labels = ["original"] + [f"{m}: {kind}" for m in methods
                                 for kind in ("protected", "edit" if pipe is not None else "recon")]
        image_grid_figure(ctx.out / "plots" / "grid.png", list(zip(labels, grid_rows, strict=False)),
                          [f"image {i + 1}" for i in range(len(grid_rows[0]))],
                          f"PCA and baselines at eps={cfg.eps * 255:.0f}/255 (seed {cfg.seeds[0]})")
        rec.plots.append("plots/grid.png")
        rec.notes.append("plots/grid.png rows: original; then per method in order " + ", ".join(methods)
                         + ": protected image, " + ("its edit (first prompt, first strength)" if pipe is not None
                                                    else "reconstruction through the surrogate VAE"))
    rec.extra["paired"] = {}
    for metric, by_method in per_image.items():
        for a, b in PAIRS:
            if a in by_method and b in by_method:
                res_p = paired(by_method[a], by_method[b])
                rec.extra["paired"][f"{metric}:{a}-{b}"] = res_p
                rec.notes.append(f"paired {metric} {a} - {b}: {res_p['mean_diff']:+.3f} dB, 95% CI "
                                 f"[{res_p['ci95'][0]:+.3f}, {res_p['ci95'][1]:+.3f}] over {res_p['n']} images -> "
                                 + ("tie" if res_p["verdict"] == "tie" else f"{a} {res_p['verdict']}"))
    _curve(rec, cfg, models, ctx)
    _claims(rec, cfg, a_name, methods)
    return rec


def _curve(rec: RunRecord, cfg: Config, models: dict[str, Any], ctx: RunContext) -> None:
    """Round-trip PSNR (protected vs clean reconstruction) against eps: the key figure."""
    if not cfg.curve_eps:
        return
    points: dict[str, list[tuple[float, float, float]]] = {}
    for seed in cfg.seeds:
        x = torch.round(heldout_crops(cfg.curve_n, cfg.image_size, seed) * 255).to(ctx.device) / 255
        for eps in cfg.curve_eps:
            for method in CURVE_METHODS:
                def unit(method: str = method, eps: float = eps, x: torch.Tensor = x, seed: int = seed) -> dict[str, Any]:
                    c = replace(cfg, eps=eps, alpha=min(cfg.alpha * eps / cfg.eps, eps))
                    x_adv = quantize_toward(x, make_attack(method, c, models)(models["a"], x,
                                                                              torch.Generator().manual_seed(seed)), eps)
                    m, _ = evaluate(models["a"], x, x_adv, seed)
                    return {"recon_psnr": m["recon_psnr"], "per_image": m["per_image_recon_psnr"]}

                res = ctx.unit(f"curve/{method}/eps={eps:.5f}/seed={seed}", unit, seed=seed)
                rec.add_series("curve", method, seed, round(eps * 255), recon_psnr=res["recon_psnr"])
                pi = torch.tensor(res["per_image"])
                points.setdefault(method, []).append((eps * 255, float(pi.mean()), float(pi.std())))
    from trustlab.systems.pca.plots import distance_vs_eps

    distance_vs_eps(ctx.out / "plots" / "distance_vs_eps.png", points, rec.extra.get("vae_name", "tiny-a"))
    rec.plots.append("plots/distance_vs_eps.png")


def _claims(rec: RunRecord, cfg: Config, a_name: str, methods: list[str]) -> None:
    sa, sb = f"vae={a_name}", "vae=tiny-b"

    def m(method: str, metric: str, setting: str = sa) -> float:
        return rec.mean(method, metric, setting=setting)

    pr = rec.extra.get("paired", {})

    def verdict(key: str) -> str:
        return pr.get(key, {}).get("verdict", "n/a")

    pca, pg, rnd = m("pca", "recon_psnr"), m("photoguard", "recon_psnr"), m("random", "recon_psnr")
    rec.add_claim("C1", f"VAE round trip: PCA lowers reconstruction PSNR (vs the clean reconstruction) more than "
                        f"PhotoGuard (official z = 0 target) and random noise at eps={cfg.eps * 255:.0f}/255, "
                        "per-image paired 95% intervals below 0",
                  verdict("recon_psnr:pca-photoguard") == "lower" and verdict("recon_psnr:pca-random") == "lower",
                  pca_recon_psnr=pca, photoguard_recon_psnr=pg, random_recon_psnr=rnd,
                  photoguard_grey_recon_psnr=m("photoguard_grey", "recon_psnr"),
                  pca_plus_recon_psnr=m("pca_plus", "recon_psnr"),
                  verdict_vs_photoguard=verdict("recon_psnr:pca-photoguard"),
                  verdict_vs_random=verdict("recon_psnr:pca-random"))
    if "edit_psnr_clean:pca-photoguard" in pr:
        rec.add_claim("C5", "Real edit (img2img): PCA- lowers PSNR(edit of protected, edit of clean) more than "
                            "PhotoGuard; PCA+ lowers PSNR(edit of protected, original) more than PhotoGuard "
                            "(paired 95% intervals below 0)",
                      verdict("edit_psnr_clean:pca-photoguard") == "lower"
                      and verdict("edit_psnr_orig:pca_plus-photoguard") == "lower",
                      pca_edit_psnr_clean=m("pca", "edit_psnr_clean"),
                      photoguard_edit_psnr_clean=m("photoguard", "edit_psnr_clean"),
                      advdm_edit_psnr_clean=m("advdm", "edit_psnr_clean") if "advdm" in methods else float("nan"),
                      pca_plus_edit_psnr_orig=m("pca_plus", "edit_psnr_orig"),
                      photoguard_edit_psnr_orig=m("photoguard", "edit_psnr_orig"),
                      none_edit_psnr_orig=m("none", "edit_psnr_orig"),
                      verdict_pca_vs_photoguard=verdict("edit_psnr_clean:pca-photoguard"),
                      verdict_pca_vs_advdm=verdict("edit_psnr_clean:pca-advdm"),
                      verdict_pca_plus_vs_photoguard=verdict("edit_psnr_orig:pca_plus-photoguard"))
    if "advdm" in methods:
        ratio = m("advdm", "cpu_per_image_s") / max(m("pca", "cpu_per_image_s"), 1e-12)
        rec.add_claim("C2", "PCA needs less CPU time per image than the diffusion-loss attack (AdvDM), same run "
                            "(process CPU time: wall time on a shared machine depends on its load)",
                      ratio > 1, advdm_over_pca_cpu=ratio, pca_cpu_per_image_s=m("pca", "cpu_per_image_s"),
                      advdm_cpu_per_image_s=m("advdm", "cpu_per_image_s"),
                      pca_time_per_image_s=m("pca", "time_per_image_s"),
                      advdm_time_per_image_s=m("advdm", "time_per_image_s"),
                      pca_peak_mem_mb=m("pca", "peak_mem_mb"), advdm_peak_mem_mb=m("advdm", "peak_mem_mb"))
    pb, rb, pgb = m("pca", "recon_psnr", sb), m("random", "recon_psnr", sb), m("photoguard", "recon_psnr", sb)
    rec.add_claim("C3", "Transfer: PCA crafted on tiny-a lowers tiny-b's reconstruction PSNR more than random noise",
                  pb < rb, pca_recon_psnr_b=pb, random_recon_psnr_b=rb, photoguard_recon_psnr_b=pgb,
                  pca_plus_recon_psnr_b=m("pca_plus", "recon_psnr", sb))
    budget_ok = all(r.get("linf_255", 0) <= cfg.eps * 255 + 1e-3 for r in rec.rows)
    rec.add_claim("C4", "Every saved protected image keeps ||delta||_inf <= eps (after 8-bit rounding)", budget_ok,
                  max_linf_255=max(r.get("linf_255", 0) for r in rec.rows), eps_255=cfg.eps * 255)
