"""Embedded English text corpus with a fixed calibration/evaluation split.

The text is CPython's own ``pydoc_data.topics`` (the help topics of the Python documentation, PSF
licence, shipped with every CPython install): about 465k characters of technical English. Topics are
concatenated in sorted-key order and split at a fixed character fraction, so the split never
changes between runs or machines.

Card:
    source: ``pydoc_data.topics`` (CPython standard library), PSF licence.
    size: ~465k characters (~113k SmolLM2 tokens, ~465k bytes).
    split: first ``calib_fraction`` (default 0.5) of the characters -> calibration, the rest ->
        evaluation (:func:`corpus_split`); or three parts (:func:`corpus_split3`): first 50 % ->
        training (the tiny Llama), next 10 % -> calibration (stands in for C4 in the IMPQ paper),
        last 40 % -> evaluation (stands in for WikiText-2).
    caveat: technical English about Python; not web text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trustlab.errors import UserError


@dataclass(frozen=True)
class TextSplit:
    """The calibration and evaluation halves of the corpus.

    Attributes:
        calibration: Calibration text (model training for the tiny model, SPQE, GPTQ Hessians).
        evaluation: Held-out evaluation text (perplexity).
    """

    calibration: str
    evaluation: str


def corpus_text() -> str:
    """The whole corpus: every ``pydoc_data.topics`` entry, in sorted-key order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() for k in sorted(topics))


def corpus_split(calib_fraction: float = 0.5) -> TextSplit:
    """Split the corpus at a fixed character fraction.

    Args:
        calib_fraction: Fraction of characters that go to calibration, in (0, 1).

    Raises:
        UserError: ``calib_fraction`` outside (0, 1).
    """
    if not 0.0 < calib_fraction < 1.0:
        raise UserError(f"calib_fraction={calib_fraction} must be in (0, 1)", "use e.g. 0.5")
    text = corpus_text()
    cut = int(len(text) * calib_fraction)
    return TextSplit(calibration=text[:cut], evaluation=text[cut:])


@dataclass(frozen=True)
class TextSplit3:
    """Training, calibration and evaluation parts of the corpus (disjoint, in corpus order).

    Attributes:
        train: Text a model may be trained on (the tiny Llama).
        calibration: Calibration text (SPQE, baselines, GPTQ Hessians), never trained on.
        evaluation: Held-out evaluation text (perplexity).
    """

    train: str
    calibration: str
    evaluation: str


def corpus_split3(train_fraction: float = 0.5, calib_fraction: float = 0.1) -> TextSplit3:
    """Split the corpus into training / calibration / evaluation parts at fixed character fractions.

    With the defaults the training part is exactly ``corpus_split(0.5).calibration``, calibration is
    the next 10 % and evaluation the last 40 %, so a model trained on the training part is calibrated
    and evaluated on text it has never seen (as an LLM calibrated on C4 and evaluated on WikiText-2).

    Raises:
        UserError: fractions outside (0, 1) or summing to 1 or more.
    """
    if not (0.0 < train_fraction < 1.0 and 0.0 < calib_fraction < 1.0 and train_fraction + calib_fraction < 1.0):
        raise UserError(f"train_fraction={train_fraction}, calib_fraction={calib_fraction} must be in (0, 1) "
                        "with a sum below 1", "use e.g. 0.5 and 0.1")
    text = corpus_text()
    a = int(len(text) * train_fraction)
    b = int(len(text) * (train_fraction + calib_fraction))
    return TextSplit3(train=text[:a], calibration=text[a:b], evaluation=text[b:])


def byte_encode(text: str) -> torch.Tensor:
    """UTF-8 bytes as a 1-D ``long`` tensor (vocabulary of 256, no special tokens)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def byte_decode(ids: torch.Tensor | list[int]) -> str:
    """Inverse of :func:`byte_encode` (invalid UTF-8 is replaced)."""
    vals = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return bytes(int(v) for v in vals).decode("utf-8", errors="replace")


def chunk_tokens(ids: torch.Tensor, seq_len: int, n_seqs: int | None = None) -> torch.Tensor:
    """Cut a 1-D token stream into consecutive, non-overlapping rows of ``seq_len`` tokens.

    Args:
        ids: 1-D token ids.
        seq_len: Tokens per row.
        n_seqs: Keep only the first ``n_seqs`` rows (all when ``None``).

    Returns:
        ``(n, seq_len)`` tensor.

    Raises:
        UserError: the stream is shorter than one row, or fewer rows than asked exist.
    """
    if seq_len < 2:
        raise UserError(f"seq_len={seq_len} must be >= 2", "use e.g. 128")
    n_avail = ids.numel() // seq_len
    if n_avail < 1:
        raise UserError(f"text of {ids.numel()} tokens is shorter than one sequence of {seq_len}", "lower seq_len")
    n = n_avail if n_seqs is None else int(n_seqs)
    if n < 1 or n > n_avail:
        raise UserError(f"asked for {n} sequences of {seq_len} tokens but only {n_avail} exist",
                        f"use at most {n_avail} sequences or a shorter seq_len")
    return ids[: n * seq_len].view(n, seq_len).clone()
