"""Configuration of the IP-Adapter hijacking experiment (defaults = ``default`` scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError


@dataclass
class Config(SystemConfig):
    """Hijack success vs eps against each defense, on the tiny image-prompt pipeline.

    Attributes:
        eps_list: Attack budgets (L-infinity, [0, 1] pixel units); one setting ``eps=<k>/255`` each.
        default_eps: The budget the claims are evaluated at (must be in ``eps_list``).
        attack_steps: PGD iterations (step size ``2.5 * eps / attack_steps``, random start).
        n_src: Benign source images attacked per seed.
        image_size: Side of the concept images and generations.
        encoder_steps: Training steps of the tiny CLIP image encoder.
        generator_steps: Training steps of the IP-Adapter generator (UNet + adapter).
        generator_channels: UNet block widths of the generator.
        classifier_steps: Training steps of the concept classifier that scores generations.
        sample_steps: DDIM steps per generation.
        fare_steps: FARE fine-tuning steps of the robust encoder.
        fare_eps: FARE training budget.
        fare_inner_steps: Inner PGD steps of FARE.
        jpeg_quality: Quality of the JPEG defense.
        noise_sigma: Std of the Gaussian input-noise defense.
        adaptive: Add the adaptive-attack rows (gradient-masking check of every defense).
        eot_samples: Noise samples per step of the EOT attack on the noise defense.
        strong_factor: Step multiplier of the strong attack on the robust encoder.
        strong_restarts: Random restarts of the strong attack.
    """

    eps_list: list[float] = field(default_factory=lambda: [4 / 255, 8 / 255, 16 / 255])
    default_eps: float = 8 / 255
    attack_steps: int = 100
    n_src: int = 24
    image_size: int = 16
    encoder_steps: int = 600
    generator_steps: int = 300
    generator_channels: list[int] = field(default_factory=lambda: [16, 32])
    classifier_steps: int = 200
    sample_steps: int = 10
    fare_steps: int = 100
    fare_eps: float = 8 / 255
    fare_inner_steps: int = 5
    jpeg_quality: int = 75
    noise_sigma: float = 16 / 255
    adaptive: bool = True
    eot_samples: int = 8
    strong_factor: int = 5
    strong_restarts: int = 3

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"seeds": [0], "eps_list": [8 / 255], "n_src": 8, "encoder_steps": 80, "generator_steps": 30,
                  "classifier_steps": 30, "sample_steps": 3, "fare_steps": 15, "fare_inner_steps": 2,
                  "attack_steps": 10, "eot_samples": 2, "strong_restarts": 2},
        "quick": {"seeds": [0], "eps_list": [4 / 255, 8 / 255, 16 / 255], "n_src": 8, "encoder_steps": 80,
                  "generator_steps": 30, "classifier_steps": 30, "sample_steps": 3, "fare_steps": 15,
                  "fare_inner_steps": 2, "attack_steps": 10, "eot_samples": 2, "strong_restarts": 2},
        "paper": {"eps_list": [2 / 255, 4 / 255, 8 / 255, 16 / 255], "n_src": 64, "encoder_steps": 2000,
                  "generator_steps": 4000, "generator_channels": [32, 64], "fare_steps": 1000, "sample_steps": 30},
    }

    def validate(self) -> None:
        """Check budgets and sizes."""
        super().validate()
        if not self.eps_list or any(not 0 < e <= 1 for e in self.eps_list):
            raise UserError(f"eps_list={self.eps_list} must hold budgets in (0, 1]", "e.g. [0.0157, 0.0314]")
        if not any(abs(e - self.default_eps) < 1e-9 for e in self.eps_list):
            raise UserError(f"default_eps={self.default_eps} is not in eps_list", "add it to eps_list")
        if min(self.attack_steps, self.n_src, self.sample_steps, self.fare_inner_steps) < 1:
            raise UserError("attack_steps, n_src, sample_steps and fare_inner_steps must be >= 1", "fix the config")
        if min(self.eot_samples, self.strong_factor, self.strong_restarts) < 1:
            raise UserError("eot_samples, strong_factor and strong_restarts must be >= 1", "fix the config")
        if not 1 <= self.jpeg_quality <= 100 or self.noise_sigma < 0:
            raise UserError("jpeg_quality must be in [1, 100] and noise_sigma >= 0", "fix the config")
        if self.image_size % 4:
            raise UserError(f"image_size={self.image_size} must be a multiple of 4", "use 16 or 32")
