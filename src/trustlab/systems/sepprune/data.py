"""Data of the SepPrune experiment: the cached pseudo-speaker corpus, speaker-disjoint train/test
mixtures, a real-speech test set (Asterisk prompts) and users' Libri2Mix-style folders.

See :mod:`trustlab.data.speech` for the data card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from trustlab.data.speech import (
    SAMPLE_RATE,
    MixtureSet,
    SpeechCorpus,
    asterisk_corpus,
    build_corpus,
    espeak_available,
    load_mixture_folder,
    split_speakers,
)
from trustlab.errors import UserError
from trustlab.systems.sepprune.config import Config
from trustlab.utils.cache import cache_path
from trustlab.utils.io import load_tensors, save_tensors
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)


def corpus_recipe(cfg: Config) -> dict[str, object]:
    """What determines the synthetic corpus (its cache key; v2: espeak-ng made deterministic on first runs)."""
    source = cfg.source if cfg.source != "auto" else ("espeak" if espeak_available() else "formant")
    return {"v": 2, "source": source, "n_speakers": cfg.n_speakers,
            "sentences_per_speaker": cfg.sentences_per_speaker, "seed": cfg.data_seed}


def load_corpus(cfg: Config) -> SpeechCorpus:
    """Build (or read from the trustlab cache) the pseudo-speaker corpus of ``cfg``."""
    recipe = corpus_recipe(cfg)
    path = cache_path("sepprune-corpus", recipe, threads=False)
    if path.is_file():
        tensors, meta = load_tensors(path)
        names = [str(n) for n in json.loads(meta["names"])]
        return SpeechCorpus(names, [tensors[f"s{i}"].numpy() for i in range(len(names))], str(recipe["source"]))
    corpus = build_corpus(cfg.n_speakers, cfg.sentences_per_speaker, cfg.data_seed, str(recipe["source"]))
    save_tensors(path, {f"s{i}": torch.from_numpy(a) for i, a in enumerate(corpus.audio)},
                 {"names": corpus.names, "recipe": recipe})
    return corpus


class CropSet(torch.utils.data.Dataset):
    """Random fixed-length crops (seeded per item) of user-provided mixtures ``(mix [n, T], src [n, 2, T])``."""

    def __init__(self, mix: torch.Tensor, src: torch.Tensor, n: int, n_samples: int, seed: int) -> None:
        self.mix, self.src, self.n, self.n_samples, self.seed = mix, src, n, n_samples, seed

    def __len__(self) -> int:
        return self.n

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items stacked."""
        items = [self[i] for i in range(self.n)]
        return torch.stack([m for m, _ in items]), torch.stack([s for _, s in items])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(derive_seed(self.seed, i))
        j = int(rng.integers(len(self.mix)))
        t = self.mix.shape[-1]
        if t <= self.n_samples:
            pad = self.n_samples - t
            return (torch.nn.functional.pad(self.mix[j], (0, pad)), torch.nn.functional.pad(self.src[j], (0, pad)))
        s = int(rng.integers(0, t - self.n_samples + 1))
        return self.mix[j, s : s + self.n_samples], self.src[j, :, s : s + self.n_samples]


@dataclass
class ExperimentData:
    """Everything the experiment reads.

    Attributes:
        make_train: ``(n, seed) -> Dataset`` of training mixtures of ``segment_s``.
        val: ``(mix [n, T], sources [n, 2, T])`` validation mixtures (speakers disjoint from training and
            test): every selection and the convergence curves read these, never the test set.
        test: ``(mix [n, T], sources [n, 2, T])`` held-out (speaker-disjoint) mixtures.
        real: Real-speech test mixtures, or None when the Asterisk prompts are absent.
        description: One line for the run notes.
    """

    make_train: object
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    real: tuple[torch.Tensor, torch.Tensor] | None
    description: str


def load_data(cfg: Config) -> ExperimentData:
    """Build the experiment's data from ``cfg`` (synthetic by default, users' folders when given)."""
    seg = int(cfg.segment_s * SAMPLE_RATE)
    test_len = int(cfg.test_segment_s * SAMPLE_RATE)
    desc = []
    corpus = None
    if cfg.train_dir is None or cfg.test_dir is None:
        corpus = load_corpus(cfg)
        train_spk, test_spk = split_speakers(len(corpus), cfg.n_test_speakers)
        train_spk, val_spk = train_spk[: -cfg.n_val_speakers], train_spk[-cfg.n_val_speakers :]
        desc.append(f"{corpus.source} corpus: {len(corpus)} speakers ({len(train_spk)} training, {len(val_spk)} "
                    f"validation, {len(test_spk)} test), {corpus.seconds() / 60:.1f} min at 8 kHz")
    if cfg.train_dir is not None:
        mix, src, names = load_mixture_folder(cfg.train_dir, SAMPLE_RATE)
        if len(names) < 2:
            raise UserError(f"{cfg.train_dir!r} holds {len(names)} mixture(s)", "need >= 2 (training + validation)")
        n_val = max(1, min(cfg.n_val, len(names) // 5))
        val = CropSet(mix[-n_val:], src[-n_val:], n_val, test_len, derive_seed(cfg.data_seed, "val")).tensors()
        mix, src = mix[:-n_val], src[:-n_val]
        desc.append(f"training on {len(names) - n_val} mixtures from {cfg.train_dir} ({n_val} more for validation)")

        def make_train(n: int, seed: int) -> torch.utils.data.Dataset:
            return CropSet(mix, src, n, seg, seed)
    else:
        assert corpus is not None

        def make_train(n: int, seed: int) -> torch.utils.data.Dataset:
            return MixtureSet(corpus, train_spk, n, seg, seed)

        val = MixtureSet(corpus, val_spk, cfg.n_val, test_len, derive_seed(cfg.data_seed, "val")).tensors()
    if cfg.test_dir is not None:
        test = load_mixture_folder(cfg.test_dir, SAMPLE_RATE, max_items=cfg.n_test, max_seconds=cfg.test_segment_s)[:2]
        desc.append(f"testing on {len(test[0])} mixtures from {cfg.test_dir}")
    else:
        assert corpus is not None
        test = MixtureSet(corpus, test_spk, cfg.n_test, test_len, derive_seed(cfg.data_seed, "test")).tensors()
    real = None
    if cfg.real_eval:
        try:
            ast = asterisk_corpus()
            real = MixtureSet(ast, list(range(len(ast))), cfg.n_real, test_len, derive_seed(cfg.data_seed, "real")).tensors()
            desc.append(f"real-speech test: {cfg.n_real} mixtures of Asterisk voices {', '.join(ast.names)}")
        except UserError as exc:
            log.warning("real-speech evaluation skipped: %s", exc)
            desc.append("real-speech test skipped (Asterisk prompt packages not installed)")
    return ExperimentData(make_train, val, test, real, "; ".join(desc))
