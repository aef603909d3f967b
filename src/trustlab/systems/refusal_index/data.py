"""Data of the Refusal Index system: the embedded factual QA set and users' QA files.

Thin re-exports of :mod:`trustlab.data.factual_qa` (shared, so other systems can reuse them), plus
:func:`load_items` which applies the run config.
"""

from __future__ import annotations

from trustlab.data.factual_qa import CARD, QAItem, load_factual_qa, load_qa_file, sample_items

__all__ = ["CARD", "QAItem", "load_factual_qa", "load_items", "load_qa_file", "sample_items"]


def load_items(data: str, data_format: str, n_questions: int, seed: int) -> list[QAItem]:
    """``embedded`` or a user file, then a seeded category-stratified subset of ``n_questions``.

    Raises:
        UserError: unreadable/malformed file or a non-positive question count.
    """
    items = load_factual_qa() if data == "embedded" else load_qa_file(data, data_format)
    return sample_items(items, n_questions, seed=seed, stratify=True)
