"""Seeded two-speaker 8 kHz speech mixtures for speech-separation experiments, and a folder loader.

Data card
---------
- **espeak-ng pseudo-speakers** (default when the Debian package ``espeak-ng`` is installed): each
  pseudo-speaker is an espeak-ng voice variant (``en-us+m3``, ``en-gb+f2``, ...) with its own pitch,
  word gap and speaking rate, reading English sentences taken from CPython's bundled
  ``pydoc_data.topics`` (PSF licence). Synthesized at 22,050 Hz, resampled to 8 kHz with
  ``scipy.signal.resample_poly``. Synthetic speech, *not* real speech; espeak-ng is GPL-3, its
  output is unencumbered. espeak-ng runs with a pinned PulseAudio runtime folder
  (:func:`espeak_env`), which makes its output deterministic, so a seed fixes the corpus exactly.
- **formant pseudo-speech** (the fallback when espeak-ng is absent): a NumPy source-filter
  synthesizer (glottal pulse train at a speaker-specific pitch, vowel formants scaled by a
  speaker-specific vocal-tract factor, noise bursts for consonants). Crude but speech-like in the
  features a separator uses (harmonics, formants, syllabic rhythm); deterministic per seed.
- **Asterisk prompts** (``source="asterisk"``): real recorded 8 kHz speech from the Debian packages
  ``asterisk-core-sounds-en-wav`` (Allison Smith, en-US, female, CC-BY-SA-3.0) and
  ``asterisk-core-sounds-it-wav`` (Carlo Flora, it-IT, male, CC-BY-3.0), plus any other
  ``/usr/share/asterisk/sounds/<lang>_<sex>_<Name>`` voice folder found. Only a handful of real
  speakers exist, so it is an evaluation set ("does a model trained on pseudo-speakers separate real
  voices?"), not a speaker-disjoint training corpus.
- **Your data**: :func:`load_mixture_folder` reads Libri2Mix / WSJ0-2mix-style folders
  (``mix*/``, ``s1/``, ``s2/`` with matching WAV names).

Mixtures pair two *distinct* speakers at a random relative level in ``[-snr_db, +snr_db]`` dB and are
scaled so the mixture has RMS 0.1. Every mixture ``i`` of a set is a pure function of
``(corpus, seed, i)``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)

SAMPLE_RATE = 8000
ESPEAK_RATE = 22050
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
_VARIANTS = [f"m{i}" for i in range(1, 8)] + [f"f{i}" for i in range(1, 6)]
_LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]


# -- text -------------------------------------------------------------------------------------------
def sentences() -> list[str]:
    """Plain English sentences (40-140 characters, letters and punctuation only) from ``pydoc_data``."""
    import pydoc_data.topics as topics

    text = " ".join(topics.topics[k] for k in sorted(topics.topics))
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = re.sub(r"\s+", " ", s.strip())
        if 40 <= len(s) <= 140 and re.fullmatch(r"[A-Za-z ,.;'-]+", s):
            out.append(s)
    return sorted(set(out))


# -- speakers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PseudoSpeaker:
    """One synthetic voice.

    Attributes:
        voice: espeak-ng voice with variant, e.g. ``en-us+m3``.
        pitch: espeak-ng base pitch 0-99.
        word_gap: espeak-ng extra pause between words (units of 10 ms).
        speed: Words per minute.
        female: Whether the variant is a female one (used by the formant fallback too).
    """

    voice: str
    pitch: int
    word_gap: int
    speed: int
    female: bool

    @property
    def name(self) -> str:
        """A stable id, e.g. ``en-us+m3_p40_g1_s150``."""
        return f"{self.voice}_p{self.pitch}_g{self.word_gap}_s{self.speed}"


def pseudo_speakers(n: int, seed: int) -> list[PseudoSpeaker]:
    """``n`` distinct pseudo-speakers drawn (seeded) from voices x variants x pitch x rate.

    Raises:
        ValueError: ``n`` is not in ``[2, 1000]``.
    """
    if not 2 <= n <= 1000:
        raise ValueError(f"n must be in [2, 1000], got {n}")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[PseudoSpeaker] = []
    while len(out) < n:
        variant = _VARIANTS[int(rng.integers(len(_VARIANTS)))]
        spk = PseudoSpeaker(
            voice=f"{_LANGS[int(rng.integers(len(_LANGS)))]}+{variant}",
            pitch=int(rng.integers(15, 86)),
            word_gap=int(rng.integers(0, 4)),
            speed=int(rng.integers(130, 191)),
            female=variant.startswith("f"),
        )
        if spk.name not in seen:
            seen.add(spk.name)
            out.append(spk)
    return out


# -- synthesis --------------------------------------------------------------------------------------
def espeak_available() -> bool:
    """Whether the ``espeak-ng`` executable is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV (8/16/32-bit int or 32-bit float) as float32 mono in [-1, 1] and its rate.

    Multi-channel files are averaged to mono.

    Raises:
        UserError: missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"audio file {str(p)!r} does not exist", "check the path")
    try:
        from scipy.io import wavfile

        rate, data = wavfile.read(str(p))
    except Exception as exc:  # scipy raises ValueError for malformed files
        raise UserError(f"cannot read {str(p)!r} as WAV ({exc})", "convert it to PCM WAV") from exc
    if data.dtype == np.int16:
        x = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        x = data.astype(np.float32) / 2147483648.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype in (np.float32, np.float64):
        x = data.astype(np.float32)
    else:
        raise UserError(f"{str(p)!r} has unsupported sample type {data.dtype}", "convert it to 16-bit PCM WAV")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x, int(rate)


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of ``x`` from ``rate`` to ``target`` Hz."""
    if rate == target:
        return x.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def espeak_env(runtime_dir: str | Path) -> dict[str, str]:
    """The environment espeak-ng runs in: ours, with PulseAudio's runtime folder pinned to ``runtime_dir``.

    Why: espeak-ng links libpulse (through pcaudiolib) and initializes it even when it only writes a
    WAV file. When libpulse finds no runtime folder (a fresh ``$HOME``, or ``/tmp`` cleaned since), it
    creates ``/tmp/pulse-<random>`` and re-seeds the C library's ``rand()`` on the way; espeak-ng's
    breathy variants (``f2``, ``f3``, ``f5``, ...) draw their aspiration noise from ``rand()``, so the
    *first* synthesis on a fresh machine came out different from every later one. With an existing,
    private runtime folder libpulse creates nothing and ``rand()`` keeps its fixed default seed, so the
    output is a pure function of the text and the voice.
    """
    env = dict(os.environ)
    env["PULSE_RUNTIME_PATH"] = str(runtime_dir)
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return env


def synthesize_espeak(text: str, speaker: PseudoSpeaker, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speak ``text`` with espeak-ng as ``speaker``; float32 at ``sample_rate``.

    Raises:
        UserError: espeak-ng is not installed or failed.
    """
    if not espeak_available():
        raise UserError("espeak-ng is not installed", "sudo apt-get install espeak-ng, or use source='formant'")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "u.wav"
        cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-g", str(speaker.word_gap),
               "-s", str(speaker.speed), "-w", str(out), text]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=120, check=False, env=espeak_env(tmp))
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"espeak-ng took over 120 s for voice {speaker.voice!r}",
                            "check that espeak-ng runs (`espeak-ng -w /tmp/x.wav hello`)") from exc
        if res.returncode != 0 or not out.is_file():
            raise UserError(f"espeak-ng failed for voice {speaker.voice!r}: {res.stderr.decode()[:200]}",
                            "check `espeak-ng --voices`")
        x, rate = read_wav(out)
    return resample(x, rate, sample_rate)


_VOWELS = np.array([  # F1, F2, F3 (Hz) of adult male vowels (Peterson & Barney 1952, rounded)
    [730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [660, 1720, 2410],
    [300, 870, 2240], [570, 840, 2410], [440, 1020, 2240], [490, 1350, 1690],
], dtype=np.float64)


def synthesize_formant(n_seconds: float, speaker: PseudoSpeaker, seed: int,
                       sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Source-filter pseudo-speech: the espeak-free fallback (deterministic in ``seed``).

    A glottal pulse train at a speaker-specific pitch (declining within each phrase, with jitter)
    drives three formant resonators per syllable; some syllables start with a noise burst; words
    are separated by short pauses.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    f0 = (170.0 if speaker.female else 95.0) * 2 ** ((speaker.pitch - 50) / 60)
    tract = (1.17 if speaker.female else 1.0) * (1 + (speaker.pitch - 50) / 500)
    syl = 0.18 * 160 / speaker.speed
    n_total = int(n_seconds * sample_rate)
    out: list[np.ndarray] = []
    length = 0
    while length < n_total:
        n_syl = int(rng.integers(1, 4))
        for _ in range(n_syl):
            n = int(sample_rate * syl * rng.uniform(0.7, 1.4))
            t = np.arange(n) / sample_rate
            pitch = f0 * (1 + 0.12 * rng.standard_normal() * 0.5) * (1 - 0.15 * t / max(t[-1], 1e-3))
            phase = np.cumsum(2 * np.pi * pitch / sample_rate)
            src = (np.sin(phase) > 0.95).astype(np.float64) + 0.02 * rng.standard_normal(n)
            formants = _VOWELS[int(rng.integers(len(_VOWELS)))] * tract
            y = src
            for k, f in enumerate(formants):
                if f >= sample_rate / 2 - 100:
                    continue
                r = np.exp(-np.pi * (60 + 40 * k) / sample_rate)
                y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sample_rate), r * r], y)
            env = np.sin(np.pi * np.arange(n) / n) ** 0.5
            y = y * env
            if rng.random() < 0.4:
                m = min(n, int(0.05 * sample_rate))
                burst = lfilter([1, -0.9], [1], rng.standard_normal(m)) * 0.3 * float(np.abs(y).max() + 1e-6)
                y[:m] += burst
            out.append(y)
            length += n
        pause = int(sample_rate * (rng.uniform(0.04, 0.15) + 0.01 * speaker.word_gap))
        out.append(np.zeros(pause))
        length += pause
    x = np.concatenate(out)[:n_total]
    return (x / (np.abs(x).max() + 1e-8) * 0.5).astype(np.float32)


# -- corpus -----------------------------------------------------------------------------------------
@dataclass
class SpeechCorpus:
    """One long waveform per speaker (pauses included), at ``sample_rate``.

    Attributes:
        names: Speaker ids.
        audio: One float32 waveform per speaker.
        source: ``espeak``, ``formant`` or ``asterisk``.
        sample_rate: Hz.
    """

    names: list[str]
    audio: list[np.ndarray]
    source: str
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.names)

    def seconds(self) -> float:
        """Total duration."""
        return float(sum(len(a) for a in self.audio)) / self.sample_rate


def build_corpus(n_speakers: int, sentences_per_speaker: int, seed: int, source: str = "auto") -> SpeechCorpus:
    """Synthesize a corpus of ``n_speakers`` pseudo-speakers (seeded; identical for identical arguments).

    Args:
        n_speakers: Number of pseudo-speakers.
        sentences_per_speaker: Sentences each speaker reads (espeak) or ~3.5 s units (formant).
        seed: Chooses the speakers and their sentences.
        source: ``espeak``, ``formant`` or ``auto`` (espeak when installed, else formant).

    Raises:
        UserError: unknown source, or ``espeak`` requested but not installed.
    """
    if source not in ("auto", "espeak", "formant"):
        raise UserError(f"unknown speech source {source!r}", "use auto, espeak or formant (asterisk: asterisk_corpus)")
    if sentences_per_speaker < 1:
        raise ValueError(f"sentences_per_speaker must be >= 1, got {sentences_per_speaker}")
    if source == "auto":
        source = "espeak" if espeak_available() else "formant"
        if source == "formant":
            log.warning("espeak-ng not found: using the formant pseudo-speech fallback (apt-get install espeak-ng)")
    speakers = pseudo_speakers(n_speakers, seed)
    pool = sentences()
    rng = np.random.default_rng(derive_seed(seed, "sentences"))
    audio = []
    for i, spk in enumerate(speakers):
        if source == "espeak":
            idx = rng.choice(len(pool), size=min(sentences_per_speaker, len(pool)), replace=False)
            text = " ".join(pool[j] for j in idx)
            audio.append(synthesize_espeak(text, spk))
        else:
            audio.append(synthesize_formant(3.5 * sentences_per_speaker, spk, derive_seed(seed, "formant", i)))
    return SpeechCorpus([s.name for s in speakers], audio, source)


def asterisk_corpus(root: str | Path = ASTERISK_ROOT, min_seconds: float = 1.0) -> SpeechCorpus:
    """Real 8 kHz speech: one speaker per ``<lang>_<sex>_<Name>`` folder of the Asterisk prompt packages.

    Each speaker's prompts longer than ``min_seconds`` are concatenated (sorted by file name).

    Raises:
        UserError: fewer than two voice folders with usable prompts.
    """
    root = Path(root)
    dirs = sorted(d for d in root.glob("*_*_*") if d.is_dir()) if root.is_dir() else []
    names, audio = [], []
    for d in dirs:
        parts = []
        for f in sorted(d.glob("*.wav")):
            x, rate = read_wav(f)
            x = resample(x, rate)
            if len(x) >= min_seconds * SAMPLE_RATE:
                parts.append(x)
        if parts:
            names.append(d.name)
            audio.append(np.concatenate(parts))
    if len(names) < 2:
        raise UserError(f"found {len(names)} Asterisk voice folder(s) under {str(root)!r}; need 2",
                        "sudo apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-it-wav")
    return SpeechCorpus(names, audio, "asterisk")


# -- mixtures ---------------------------------------------------------------------------------------
def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random length-``n`` crop of ``x`` (zero-padded when shorter), biased away from silence."""
    if len(x) <= n:
        return np.pad(x, (0, n - len(x)))
    best, best_e = None, -1.0
    for _ in range(3):  # keep the most energetic of 3 candidate crops
        s = int(rng.integers(0, len(x) - n + 1))
        c = x[s : s + n]
        e = float(np.mean(c * c))
        if e > best_e:
            best, best_e = c, e
    assert best is not None
    return best


def make_mixture(corpus: SpeechCorpus, speakers: list[int], n_samples: int, seed: int,
                 snr_db: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """One two-speaker mixture from two distinct speakers of ``speakers`` (indices into the corpus).

    Returns:
        ``(mixture [T], sources [2, T])`` with ``mixture == sources.sum(0)`` and mixture RMS 0.1.
    """
    if len(speakers) < 2:
        raise ValueError("need at least two speakers to mix")
    rng = np.random.default_rng(seed)
    a, b = rng.choice(len(speakers), size=2, replace=False)
    srcs = []
    for k in (a, b):
        c = _crop(corpus.audio[speakers[int(k)]], n_samples, rng).astype(np.float64)
        srcs.append(c / (np.sqrt(np.mean(c * c)) + 1e-8))
    gain = rng.uniform(-snr_db, snr_db)
    srcs[0] *= 10 ** (gain / 40)
    srcs[1] *= 10 ** (-gain / 40)
    s = np.stack(srcs)
    mix = s.sum(0)
    scale = 0.1 / (np.sqrt(np.mean(mix * mix)) + 1e-8)
    return (mix * scale).astype(np.float32), (s * scale).astype(np.float32)


class MixtureSet(torch.utils.data.Dataset):
    """``n`` seeded two-speaker mixtures of ``n_samples`` samples from ``speakers`` of ``corpus``.

    Item ``i`` is a pure function of ``(corpus, speakers, seed, i)``: ``(mixture [T], sources [2, T])``.
    """

    def __init__(self, corpus: SpeechCorpus, speakers: list[int], n: int, n_samples: int, seed: int,
                 snr_db: float = 5.0) -> None:
        if n < 1 or n_samples < 16:
            raise ValueError(f"need n >= 1 and n_samples >= 16, got n={n}, n_samples={n_samples}")
        if len(set(speakers)) < 2 or any(not 0 <= s < len(corpus) for s in speakers):
            raise ValueError(f"speakers must hold >= 2 distinct valid indices into a corpus of {len(corpus)}")
        self.corpus, self.speakers, self.n, self.n_samples = corpus, list(speakers), n, n_samples
        self.seed, self.snr_db = seed, snr_db

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        mix, src = make_mixture(self.corpus, self.speakers, self.n_samples, derive_seed(self.seed, i), self.snr_db)
        return torch.from_numpy(mix), torch.from_numpy(src)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items stacked: ``(mix [n, T], sources [n, 2, T])``."""
        items = [self[i] for i in range(self.n)]
        return torch.stack([m for m, _ in items]), torch.stack([s for _, s in items])


def split_speakers(n_speakers: int, n_test: int) -> tuple[list[int], list[int]]:
    """Speaker-disjoint split: the last ``n_test`` speakers are held out for testing."""
    if not 2 <= n_test <= n_speakers - 2:
        raise UserError(f"cannot hold out {n_test} of {n_speakers} speakers", "need >= 2 speakers on each side")
    return list(range(n_speakers - n_test)), list(range(n_speakers - n_test, n_speakers))


# -- user data --------------------------------------------------------------------------------------
def load_mixture_folder(root: str | Path, sample_rate: int = SAMPLE_RATE, max_items: int | None = None,
                        max_seconds: float | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read a Libri2Mix / WSJ0-2mix-style folder: ``mix*/`` (``mix``, ``mix_clean``, ...), ``s1/``, ``s2/``.

    Files are matched by name; each item is cropped to the shortest of its three files (and to
    ``max_seconds``) and zero-padded to the longest item so they stack.

    Args:
        root: Folder holding the three sub-folders (e.g. ``Libri2Mix/wav8k/min/test``).
        sample_rate: Required rate; files at another rate are resampled.
        max_items: Read at most this many (sorted by name).
        max_seconds: Crop every item to at most this length.

    Returns:
        ``(mix [n, T], sources [n, 2, T], names)``.

    Raises:
        UserError: missing folders, no WAV files, or unmatched names.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {str(root)!r} does not exist", "pass the folder that holds mix/, s1/, s2/")
    mix_dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("mix"))
    if not mix_dirs:
        raise UserError(f"{str(root)!r} has no mix*/ sub-folder", "expected mix/ (or mix_clean/), s1/ and s2/")
    mix_dir = next((d for d in mix_dirs if d.name in ("mix_clean", "mix")), mix_dirs[0])
    for s in ("s1", "s2"):
        if not (root / s).is_dir():
            raise UserError(f"{str(root)!r} has no {s}/ sub-folder", "expected mix/ (or mix_clean/), s1/ and s2/")
    names = sorted(f.name for f in mix_dir.glob("*.wav"))
    if not names:
        raise UserError(f"no .wav files in {str(mix_dir)!r}", "put the mixtures there as WAV files")
    missing = [n for n in names if not (root / "s1" / n).is_file() or not (root / "s2" / n).is_file()]
    if missing:
        raise UserError(f"{len(missing)} mixture(s) lack s1/ or s2/ files with the same name, e.g. {missing[0]!r}",
                        "every mix/X.wav needs s1/X.wav and s2/X.wav")
    if max_items is not None:
        names = names[:max_items]
    mixes, srcs = [], []
    for n in names:
        sig = [resample(*read_wav(d / n), sample_rate) for d in (mix_dir, root / "s1", root / "s2")]
        t = min(len(x) for x in sig)
        if max_seconds is not None:
            t = min(t, int(max_seconds * sample_rate))
        mixes.append(sig[0][:t])
        srcs.append(np.stack([sig[1][:t], sig[2][:t]]))
    t_max = max(len(m) for m in mixes)
    mix = torch.stack([torch.from_numpy(np.pad(m, (0, t_max - len(m)))) for m in mixes])
    src = torch.stack([torch.from_numpy(np.pad(s, ((0, 0), (0, t_max - s.shape[1])))) for s in srcs])
    return mix, src, names
