"""The default VAE of ``trustlab protect``: a small Stable-Diffusion-topology ``AutoencoderKL`` shipped as safetensors.

Topology as SD's VAE: four ``DownEncoderBlock2D``/``UpDecoderBlock2D`` blocks (8x down-sampling), 4 latent
channels, a ResNet mid block; only the widths are small. It is trained once by :func:`train_default_vae`
(``python -m trustlab.diffusion.default_vae --out FILE``) on crops of the training photos of
:mod:`trustlab.data.photos` and scored on 64x64 crops of the held-out photos; the result is shipped in the
package (``assets/default_vae.safetensors``), so no run trains it. The recipe and its held-out PSNR are
stored in the file's metadata.

Protection computed against this VAE is only shown to hold against VAEs like it (see the PCA README);
pass a real Stable Diffusion VAE folder with ``--vae`` for real pipelines.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trustlab.utils.logging import get_logger

log = get_logger(__name__)

ASSET = Path(__file__).parent / "assets" / "default_vae.safetensors"


@dataclass(frozen=True)
class DefaultVAERecipe:
    """Architecture and training recipe of the shipped default VAE.

    Attributes:
        block_out_channels: Widths of the four blocks (SD: 128, 256, 512, 512).
        layers_per_block: ResNets per encoder block (decoder: one more, as diffusers).
        latent_channels: Latent channels (SD: 4).
        train_size: Side of the training crops (fully convolutional: evaluated on 64x64 crops).
        steps: Adam steps.
        batch_size: Crops per step.
        lr: Peak learning rate (linear warm-up over 50 steps, cosine decay).
        kl_weight: Weight of KL(q || N(0, I)) relative to the per-pixel reconstruction loss, per latent dim.
        n_train: Distinct training crops.
        seed: Seed of initialisation, crops and sampling.
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    train_size: int = 32
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    kl_weight: float = 1e-5
    n_train: int = 8192
    seed: int = 0

    def config(self) -> dict[str, Any]:
        """``AutoencoderKL`` constructor arguments."""
        n = len(self.block_out_channels)
        return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * n,
                "up_block_types": ["UpDecoderBlock2D"] * n, "block_out_channels": list(self.block_out_channels),
                "layers_per_block": self.layers_per_block, "latent_channels": self.latent_channels,
                "norm_num_groups": 8, "sample_size": 64, "mid_block_add_attention": False}


def build(config: dict[str, Any], seed: int = 0) -> Any:
    """An ``AutoencoderKL`` from constructor arguments (seeded initialisation)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**config)


@torch.no_grad()
def heldout_psnr(vae: Any, images: torch.Tensor, batch: int = 32) -> float:
    """Mean PSNR (dB) of the posterior-mean reconstruction of ``images`` (``(n, 3, s, s)`` in [0, 1])."""
    from trustlab.diffusion.vae import decode, posterior
    from trustlab.metrics.image import psnr

    vals = []
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        vals.append(psnr(decode(vae, posterior(vae, x)[0]), x))
    return float(torch.cat(vals).mean())


def heldout_crops(n: int = 128, size: int = 64) -> torch.Tensor:
    """The fixed held-out evaluation crops (8-bit rounded, photos never used in training)."""
    from trustlab.data.photos import HELDOUT_PHOTOS, photo_crops

    return torch.round(photo_crops(HELDOUT_PHOTOS, n, size, seed=4242) * 255) / 255


def train_default_vae(recipe: DefaultVAERecipe = DefaultVAERecipe(), cpu_budget_s: float | None = None,
                      eval_every: int = 150) -> tuple[Any, dict[str, Any]]:
    """Train the default VAE; returns ``(vae, info)`` with the held-out PSNR and training time in ``info``.

    Loss per step: 0.5 * (L1 + MSE) reconstruction of a posterior sample + ``kl_weight`` * KL per latent
    dimension (SD's VAE objective without LPIPS/GAN, which need downloaded weights). ``cpu_budget_s``
    (process CPU seconds, so a shared machine's load does not change it) stops early; the schedule still
    follows ``steps``, and the steps actually run are reported.
    """
    from trustlab.data.photos import TRAIN_PHOTOS, photo_crops
    from trustlab.diffusion.vae import decode, posterior, sample_latent

    vae = build(recipe.config(), recipe.seed)
    images = torch.round(photo_crops(TRAIN_PHOTOS, recipe.n_train, recipe.train_size, seed=recipe.seed,
                                     min_frac=0.1, max_frac=0.6) * 255) / 255
    held = heldout_crops()
    opt = torch.optim.Adam(vae.parameters(), lr=recipe.lr)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 50)
        return recipe.lr * warm * 0.5 * (1 + math.cos(math.pi * step / max(recipe.steps, 1)))

    g = torch.Generator().manual_seed(recipe.seed)
    t0, c0 = time.time(), time.process_time()
    history: list[dict[str, float]] = []
    step = 0
    for step in range(recipe.steps):
        if cpu_budget_s is not None and time.process_time() - c0 > cpu_budget_s:
            step -= 1
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        vae.train()
        x = images[torch.randint(0, images.shape[0], (recipe.batch_size,), generator=g)]
        mean, logvar = posterior(vae, x)
        rec = decode(vae, sample_latent(mean, logvar, g))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = 0.5 * ((rec - x).abs().mean() + (rec - x).pow(2).mean()) + recipe.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0:
            vae.eval()
            p = heldout_psnr(vae, held)
            history.append({"step": step + 1, "seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0,
                            "heldout_psnr_db": p})
            log.info("default VAE step %d: loss %.4f, held-out PSNR %.2f dB (%.0f s, %.0f CPU s)", step + 1,
                     float(loss.detach()), p, time.time() - t0, time.process_time() - c0)
    vae.eval().requires_grad_(False)
    steps_run = step + 1 if recipe.steps else 0
    with torch.no_grad():
        lat = torch.cat([posterior(vae, images[i:i + 64])[0] for i in range(0, 1024, 64)])
    info = {"recipe": asdict(recipe), "steps_run": steps_run, "train_seconds": time.time() - t0,
            "train_cpu_seconds": time.process_time() - c0, "cpu_budget_s": cpu_budget_s,
            "heldout_psnr_db": heldout_psnr(vae, held), "heldout": "128 crops 64x64 of the held-out photos, seed 4242",
            "scaling_factor": float(1.0 / lat.std().clamp_min(1e-6)), "history": history}
    vae.register_to_config(scaling_factor=info["scaling_factor"])
    return vae, info


def save_default_vae(vae: Any, info: dict[str, Any], path: str | Path = ASSET) -> Path:
    """Write the weights with ``config`` and ``info`` as safetensors metadata."""
    from trustlab.utils.io import save_tensors

    cfg = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_tensors(path, {k: v.clone() for k, v in vae.state_dict().items()}, {"config": cfg, "info": info})


def load_default_vae(device: str | torch.device = "cpu", path: str | Path = ASSET) -> Any:
    """The shipped default VAE (eval mode, no gradients to its weights); never trains.

    Raises:
        UserError: the asset is missing (a broken install).
    """
    from trustlab.errors import UserError
    from trustlab.utils.io import load_tensors

    p = Path(path)
    if not p.is_file():
        raise UserError(f"the default VAE {str(p)!r} is missing from the installation",
                        "reinstall trustlab, or pass --vae with a local diffusers AutoencoderKL folder")
    state, meta = load_tensors(p)
    cfg = json.loads(meta["config"])
    vae = build(cfg)
    vae.load_state_dict(state)
    return vae.to(device).eval().requires_grad_(False)


def default_vae_info(path: str | Path = ASSET) -> dict[str, Any]:
    """The training info stored with the shipped default VAE (recipe, held-out PSNR, seconds)."""
    from trustlab.utils.io import load_tensors

    return json.loads(load_tensors(path)[1]["info"])


def main(argv: list[str] | None = None) -> None:
    """``python -m trustlab.diffusion.default_vae --out FILE [--steps N] [--cpu-budget S]``."""
    from trustlab.utils.logging import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ASSET))
    ap.add_argument("--steps", type=int, default=DefaultVAERecipe.steps)
    ap.add_argument("--cpu-budget", type=float, default=600.0, help="stop after this many process CPU seconds")
    args = ap.parse_args(argv)
    setup_logging("INFO")
    vae, info = train_default_vae(DefaultVAERecipe(steps=args.steps), cpu_budget_s=args.cpu_budget, eval_every=250)
    save_default_vae(vae, info, args.out)
    log.info("wrote %s: held-out PSNR %.2f dB after %d steps (%.0f s)", args.out, info["heldout_psnr_db"],
             info["steps_run"], info["train_seconds"])


if __name__ == "__main__":
    main()
