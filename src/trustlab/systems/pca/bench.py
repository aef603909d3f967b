"""Cost of ``trustlab protect`` on large photos: time per 512² image and tiled peak memory (README benchmark).

``python -m trustlab.systems.pca.bench --out results/pca/bench.json [--steps 3]``

* Default VAE: PCA sign-steps on a 512² photo as ``trustlab protect`` runs them (channels-last); seconds
  per step (wall and process CPU), the 40-step total they imply, and the plain (NCHW) layout beside it.
* SD-size VAE (random weights, SD 1.x encoder topology: widths 128-256-512-512, 2 ResNets per block,
  mid-block attention): one PCA step on a small tile, its peak activation memory (live tensor bytes, see
  :mod:`trustlab.diffusion.profiling`) and time; activation memory of a conv net grows with the tile's
  area, so the bound for a 576² context tile (``--tile 512 --margin 32``, what a 2048×1536 photo is cut
  into) is scaled from it by area and stated as such.
* Tiling: peak memory of one tiled PCA step on a larger image vs one context tile, default VAE.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F

from trustlab.diffusion.profiling import Measure
from trustlab.diffusion.tiling import encoder_loss_and_grad
from trustlab.systems.pca.method import posterior_collapse_loss


def _loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return posterior_collapse_loss(mean, logvar, 1e-8).sum()


def _photo(h: int, w: int) -> torch.Tensor:
    from trustlab.data.photos import load_photo

    p = torch.from_numpy(load_photo("chelsea")).permute(2, 0, 1)[None]
    return F.interpolate(p, size=(h, w), mode="bilinear", antialias=True).clamp(0, 1)


def _step_cost(vae: Any, x: torch.Tensor, steps: int, tile: int | None = None, margin: int = 32) -> dict[str, float]:
    encoder_loss_and_grad(vae, x, _loss, tile, margin)  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        encoder_loss_and_grad(vae, x, _loss, tile, margin)
    return {"wall_s_per_step": (time.perf_counter() - w0) / steps, "cpu_s_per_step": (time.process_time() - c0) / steps}


def sd_size_vae() -> Any:
    """A randomly initialised AutoencoderKL with Stable Diffusion 1.x's configuration."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, norm_num_groups=32).eval().requires_grad_(False)


def side_by_side(vae: Any, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """One attack step per method on one image: CPU seconds and peak activation memory, same process."""
    from trustlab.diffusion.unet import TinyUNetSpec, build_unet, make_scheduler, prompt_embedding
    from trustlab.systems.pca.baselines import AdvDMAttack, PhotoGuardEncoderAttack
    from trustlab.systems.pca.method import PosteriorCollapseAttack

    spec = TinyUNetSpec()
    unet = build_unet(spec, 4, x.shape[-1] // 8).eval().requires_grad_(False)  # random weights: cost only
    attacks = {"pca": PosteriorCollapseAttack(8 / 255, 1 / 255, 1),
               "photoguard": PhotoGuardEncoderAttack(8 / 255, 1 / 255, 1),
               "advdm": AdvDMAttack(unet, make_scheduler(), prompt_embedding(spec), 0.18215, 8 / 255, 1 / 255, 1)}
    out: dict[str, dict[str, float]] = {}
    for name, attack in attacks.items():
        attack(vae, x, torch.Generator().manual_seed(0))  # warm-up
        c0 = time.process_time()
        attack(vae, x, torch.Generator().manual_seed(0))
        cpu = time.process_time() - c0
        with Measure("cpu") as m:
            attack(vae, x, torch.Generator().manual_seed(0))
        out[name] = {"cpu_s_per_step": cpu, "peak_mb": m.peak_mb, "image": list(x.shape[-2:])}
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and write them as JSON."""
    from trustlab.diffusion.default_vae import default_vae_info, load_default_vae
    from trustlab.utils.env import env_info
    from trustlab.utils.io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sd-tile", type=int, default=128)
    args = ap.parse_args(argv)
    res: dict[str, Any] = {"threads": torch.get_num_threads(), "note": "shared 2-core machine; wall time depends on load"}
    try:
        res["env"] = env_info()
    except Exception:  # noqa: BLE001 - informative only
        pass
    from trustlab.systems.pca.cli import load_vae

    vae = load_default_vae()
    res["default_vae"] = {"heldout_psnr_db": default_vae_info()["heldout_psnr_db"]}
    # what `trustlab protect` runs: the VAE and the photo in channels-last order (see pca.cli.load_vae)
    vae_cl = load_vae("default", torch.device("cpu"))
    c = _step_cost(vae_cl, _photo(512, 512).contiguous(memory_format=torch.channels_last), args.steps)
    plain = _step_cost(vae, _photo(512, 512), args.steps)
    res["default_vae"].update({**c, "implied_40_step_wall_s": 40 * c["wall_s_per_step"],
                               "implied_40_step_cpu_s": 40 * c["cpu_s_per_step"],
                               "plain_layout_wall_s_per_step": plain["wall_s_per_step"],
                               "plain_layout_cpu_s_per_step": plain["cpu_s_per_step"]})
    # tiling: a 768x1024 photo in 256-pixel cores (320² context tiles) vs one context tile
    big = _photo(768, 1024)
    with Measure("cpu") as m_tiled:
        encoder_loss_and_grad(vae, big, _loss, tile=256, margin=32)
    with Measure("cpu") as m_one:
        encoder_loss_and_grad(vae, big[..., :320, :320], _loss, tile=None)
    res["tiling_default_vae"] = {"image": [768, 1024], "tile": 256, "margin": 32, "tiled_peak_mb": m_tiled.peak_mb,
                                 "one_context_tile_peak_mb": m_one.peak_mb,
                                 "image_buffers_mb": 3 * big.numel() * 4 / 2**20}
    res["side_by_side_default_vae"] = side_by_side(vae, _photo(256, 256))
    sd = sd_size_vae()
    s = args.sd_tile
    x = _photo(s, s)
    with Measure("cpu") as m_sd:
        encoder_loss_and_grad(sd, x, _loss)
    c_sd = _step_cost(sd, x, 1)
    scale = (576 / s) ** 2
    res["sd_size_vae"] = {"tile": s, "peak_mb": m_sd.peak_mb, **c_sd,
                          "peak_mb_576_context_tile_scaled_by_area": m_sd.peak_mb * scale,
                          "implied_40_step_wall_s_512": 40 * c_sd["wall_s_per_step"] * (512 / s) ** 2,
                          "bound_2048x1536": "one 576x576 context tile's activations plus ~3 image-sized float32 "
                                             f"buffers ({3 * 3 * 2048 * 1536 * 4 / 2**20:.0f} MB)"}
    atomic_write_json(args.out, res)
    print(res)  # noqa: T201 - a script's result


if __name__ == "__main__":
    main()
