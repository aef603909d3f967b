"""Configuration of the SepPrune experiment (defaults = the ``default`` scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError


@dataclass
class ModelConfig:
    """Conv-TasNet hyper-parameters (names of Luo & Mesgarani 2019: N, L, B, H, P, X, R).

    Attributes:
        arch: ``conv_tasnet`` (the benchmark model) or ``tdanet_lite``.
        n_filters: N.
        kernel_size: L.
        bn_chan: B.
        hid_chan: H (the pruned dimension of Conv-TasNet).
        conv_kernel_size: P.
        n_blocks: X.
        n_repeats: R.
        chan: TDANet-lite U-block channels.
        ffn_chan: TDANet-lite FFN channels (its pruned dimension).
        depth: TDANet-lite downsampling stages.
        n_iter: TDANet-lite shared-block iterations.
    """

    arch: str = "conv_tasnet"
    n_filters: int = 48
    kernel_size: int = 16
    bn_chan: int = 32
    hid_chan: int = 64
    conv_kernel_size: int = 3
    n_blocks: int = 4
    n_repeats: int = 2
    chan: int = 64
    ffn_chan: int = 256
    depth: int = 3
    n_iter: int = 4

    def spec(self) -> dict[str, Any]:
        """The architecture spec for :func:`trustlab.systems.sepprune.artifacts.build_model`."""
        if self.arch == "conv_tasnet":
            kw = {k: getattr(self, k) for k in ("n_filters", "kernel_size", "bn_chan", "hid_chan",
                                                 "conv_kernel_size", "n_blocks", "n_repeats")}
        elif self.arch == "tdanet_lite":
            kw = {k: getattr(self, k) for k in ("n_filters", "kernel_size", "bn_chan", "chan", "ffn_chan",
                                                 "depth", "n_iter")}
        else:
            raise UserError(f"unknown model.arch {self.arch!r}", "use conv_tasnet or tdanet_lite")
        return {"arch": self.arch, "kwargs": kw}


@dataclass
class Config(SystemConfig):
    """SepPrune experiment: pretrain a dense separator; prune it with the released code's SepPrune recipe
    (setting ``code_eps0.7``) and with our L1-initialized, MACs-budgeted variant (setting ``macs<target>``);
    in each setting L1, HRank and random selection keep the same per-block widths; every pruned model
    gets one fine-tuning epoch and is compared with the dense model given the same epoch and with the
    pruned architecture trained from scratch (steps to reach the same validation SI-SNRi).

    Attributes:
        source: Speech for training/testing: ``auto`` (espeak-ng, else formant fallback), ``espeak``, ``formant``.
        n_speakers: Pseudo-speakers synthesized.
        n_test_speakers: Speakers held out for the test mixtures (speaker-disjoint).
        n_val_speakers: Further speakers held out for the validation mixtures (selection, convergence).
        n_val: Validation mixtures.
        sentences_per_speaker: Sentences read by each pseudo-speaker.
        segment_s: Training segment length (s).
        test_segment_s: Test mixture length (s).
        n_test: Test mixtures.
        real_eval: Also evaluate on real 8 kHz two-speaker mixtures of the Asterisk prompts (when installed).
        n_real: Real-speech test mixtures.
        train_dir: Optional Libri2Mix/WSJ0-2mix-style folder (mix/, s1/, s2/) replacing the synthetic training set.
        test_dir: Optional such folder replacing the synthetic test set.
        model: Architecture.
        data_seed: Seed of the corpus and the test mixtures (fixed across run seeds).
        pretrain_seed: Seed of the dense model's initialization and data order.
        pretrain_steps: Dense pre-training steps (cached by recipe).
        pretrain_lr: Dense pre-training learning rate.
        batch_size: Mini-batch size everywhere.
        target_macs: MACs budget of every pruned model, as a fraction of the dense model.
        eps: SepPrune threshold of the released recipe (paper/code 0.7).
        code_steps: Mask iterations of the released recipe (code: 500 batches).
        code_batch_size: Batch size of the released recipe's mask learning (code: 1).
        code_lr: Adam lr of the released recipe (code: 0.1, scores from U(0, 1)).
        mask_steps: Mask iterations of ``sepprune_l1init``.
        l1init_lrs: Candidate lrs of ``sepprune_l1init``; with several, the best on the validation mixtures
            with the ``selection_seeds`` (never reported) is used for every reported seed.
        selection_seeds: Seeds of the validation selection (disjoint from ``seeds``).
        mask_init_scale: Spread of the ``l1`` initialization (logit units).
        mask_distill: Weight of output distillation from the dense model during mask learning (0 = off).
        mask_anneal: Anneal the Gumbel noise scale from 1 to 0 over the mask steps.
        hrank_batch: Calibration mixtures of HRank.
        curve_points: Validation evaluations per fine-tuning epoch (convergence curves).
        finetune_mixtures: Size of one fine-tuning "epoch" (mixtures).
        finetune_lr: Fine-tuning learning rate (paper 1e-3).
        scratch_epochs: Epochs the from-scratch model trains (its curve gives epochs-to-match).
        latency_s: Input length for the CPU latency measurement (s).
        latency_repeats: Timed rounds (median reported).
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    source: str = "auto"
    n_speakers: int = 40
    n_test_speakers: int = 8
    n_val_speakers: int = 4
    n_val: int = 60
    sentences_per_speaker: int = 6
    segment_s: float = 0.5
    test_segment_s: float = 1.0
    n_test: int = 100
    real_eval: bool = True
    n_real: int = 60
    train_dir: str | None = None
    test_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data_seed: int = 0
    pretrain_seed: int = 0
    pretrain_steps: int = 1200
    pretrain_lr: float = 2e-3
    batch_size: int = 8
    target_macs: float = 0.5
    eps: float = 0.7
    code_steps: int = 500
    code_batch_size: int = 1
    code_lr: float = 0.1
    mask_steps: int = 150
    l1init_lrs: list[float] = field(default_factory=lambda: [0.02, 0.1])
    selection_seeds: list[int] = field(default_factory=lambda: [100])
    mask_init_scale: float = 1.0
    mask_distill: float = 0.0
    mask_anneal: bool = False
    hrank_batch: int = 16
    curve_points: int = 4
    finetune_mixtures: int = 800
    finetune_lr: float = 1e-3
    scratch_epochs: int = 3
    latency_s: float = 4.0
    latency_repeats: int = 15

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {
            "seeds": [0], "n_speakers": 10, "n_test_speakers": 2, "n_val_speakers": 2, "n_val": 12,
            "sentences_per_speaker": 1, "n_test": 24, "real_eval": True, "n_real": 6, "segment_s": 0.25,
            "test_segment_s": 0.5, "model.n_filters": 32, "model.bn_chan": 24, "model.hid_chan": 48,
            "model.n_blocks": 3, "model.n_repeats": 1, "pretrain_steps": 150, "mask_steps": 20, "code_steps": 40,
            "finetune_mixtures": 64, "scratch_epochs": 2, "latency_s": 0.5, "latency_repeats": 3,
            "hrank_batch": 8, "curve_points": 2,
        },
        "quick": {
            "seeds": [0], "source": "formant", "n_speakers": 8, "n_test_speakers": 2, "n_val_speakers": 2,
            "n_val": 8, "sentences_per_speaker": 1, "n_test": 12, "real_eval": False, "segment_s": 0.25,
            "test_segment_s": 0.5, "model.n_filters": 16, "model.bn_chan": 12, "model.hid_chan": 24,
            "model.n_blocks": 2, "model.n_repeats": 1, "pretrain_steps": 60, "mask_steps": 8, "code_steps": 16,
            "l1init_lrs": [0.02], "finetune_mixtures": 32, "scratch_epochs": 2, "latency_s": 0.25,
            "latency_repeats": 3, "hrank_batch": 4, "curve_points": 2,
        },
        "paper": {
            "seeds": [0, 1, 2, 3, 4],
            "n_speakers": 80, "n_test_speakers": 12, "sentences_per_speaker": 10, "segment_s": 1.0,
            "test_segment_s": 2.0, "n_test": 300, "model.n_filters": 128, "model.bn_chan": 64,
            "model.hid_chan": 256, "model.n_blocks": 6, "model.n_repeats": 2, "pretrain_steps": 8000,
            "mask_steps": 500, "finetune_mixtures": 4000, "scratch_epochs": 10,
        },
    }

    def validate(self) -> None:
        """Cross-field checks (raise :class:`UserError`)."""
        super().validate()
        if self.source not in ("auto", "espeak", "formant"):
            raise UserError(f"unknown source {self.source!r}", "use auto, espeak or formant")
        if not 2 <= self.n_test_speakers <= self.n_speakers - 2:
            raise UserError(f"n_test_speakers={self.n_test_speakers} must be in [2, n_speakers-2]",
                            "raise n_speakers or lower n_test_speakers")
        if self.n_val_speakers < 2 or self.n_speakers - self.n_test_speakers - self.n_val_speakers < 2:
            raise UserError(f"n_val_speakers={self.n_val_speakers} must be >= 2 and leave >= 2 training speakers",
                            "raise n_speakers or lower n_val_speakers / n_test_speakers")
        if set(self.selection_seeds) & set(self.seeds):
            raise UserError(f"selection_seeds {self.selection_seeds} overlap the reported seeds {self.seeds}",
                            "choose settings with seeds that are never reported")
        if not 0 < self.target_macs < 1:
            raise UserError(f"target_macs={self.target_macs} must be in (0, 1)", "e.g. --set target_macs=0.5")
        if not 0 < self.eps < 1:
            raise UserError(f"eps={self.eps} must be in (0, 1)", "the paper uses 0.7")
        if not self.l1init_lrs or min(self.l1init_lrs) <= 0 or self.code_lr <= 0:
            raise UserError(f"l1init_lrs={self.l1init_lrs} and code_lr={self.code_lr} must be positive (non-empty)",
                            "e.g. --set l1init_lrs=[0.02,0.1]")
        if self.mask_init_scale <= 0 or self.mask_distill < 0:
            raise UserError("mask_init_scale must be > 0 and mask_distill >= 0",
                            "e.g. --set mask_init_scale=1 --set mask_distill=0")
        if len(self.l1init_lrs) > 1 and not self.selection_seeds:
            raise UserError("several l1init_lrs but no selection_seeds", "e.g. --set selection_seeds=[100]")
        for k in ("pretrain_steps", "mask_steps", "code_steps", "code_batch_size", "finetune_mixtures",
                  "scratch_epochs", "batch_size", "n_test", "n_val", "latency_repeats", "sentences_per_speaker",
                  "hrank_batch", "curve_points"):
            if getattr(self, k) < 1:
                raise UserError(f"{k}={getattr(self, k)} must be >= 1", f"set {k} to a positive value")
        if self.finetune_mixtures < self.batch_size:
            raise UserError("finetune_mixtures is smaller than one batch", "raise finetune_mixtures")
        if min(self.segment_s, self.test_segment_s, self.latency_s) < 0.05:
            raise UserError("segment_s, test_segment_s and latency_s must be >= 0.05 s", "use longer segments")
        self.model.spec()
