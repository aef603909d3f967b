"""PCA: posterior collapse attack (protecting images against latent-diffusion editing)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="pca",
    title="Posterior Collapse Attack: VAE-encoder-only protection against LDM editing",
    paper="Guo et al., A Gray-box Attack against Latent Diffusion Model-based Image Editing by Posterior "
          "Collapse, IEEE TIFS 2025 (arXiv:2408.10901)",
    config="trustlab.systems.pca.config:Config",
    run="trustlab.systems.pca.experiment:run",
    headline=[("pca", "recon_psnr", "vae=tiny-a"), ("photoguard", "recon_psnr", "vae=tiny-a"), ("random", "recon_psnr", "vae=tiny-a"), ("pca", "recon_psnr", "vae=tiny-b")],
    status="reproduced (tiny VAE)",
    demo=("protect photo:chelsea --steps 8 --out {out}",),
    key_figure="distance_vs_eps.png",
)
