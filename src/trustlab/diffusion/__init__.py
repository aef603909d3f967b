"""Tiny latent-diffusion pieces built from diffusers components and trained by our code.

Shared by the PCA (posterior collapse) and IP-Adapter hijacking systems: a tiny ``AutoencoderKL``
trained on embedded photo crops (:mod:`.vae`), a tiny latent UNet (:mod:`.unet`), an IP-Adapter-style
image-prompt path (:mod:`.ip_adapter`), L-infinity PGD (:mod:`.pgd`) and image I/O (:mod:`.image_io`).
Submodules import diffusers lazily; importing this package is cheap.
"""
