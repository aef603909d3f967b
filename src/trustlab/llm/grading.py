"""Short-answer grading and refusal detection for factual QA (rule-based; optional LLM judge).

The rule-based grader follows SimpleQA's three grades (CORRECT / INCORRECT / NOT_ATTEMPTED), made
deterministic:

0. only the first non-empty line of the response is graded (:func:`answer_span`; short-answer
   prompts ask for one line and small models ramble on after it);
1. **correct** when a gold answer or alias appears in the response as a whole-word sequence after
   normalisation (lower case, accents folded, punctuation and articles removed);
2. otherwise **refused** when the response is empty or matches a refusal pattern ("I don't know",
   "I'm not sure", "cannot answer", ...);
3. otherwise **incorrect**.

A hedged answer that contains the gold answer is therefore correct (as in SimpleQA), and a refusal
phrase followed by a wrong guess counts as a refusal (the rule cannot tell a committed wrong guess
from a hedge). :class:`JudgeGrader` asks a judge model instead; a judge reply that cannot be parsed
is *unscored* (``None``), never silently counted as a refusal.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Literal

from trustlab.llm.base import Backend, ChatRequest

Grade = Literal["correct", "incorrect", "refused"]

#: Refusal/abstention phrases (matched on lower-cased text).
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bi (?:really )?(?:do not|don'?t|dont) know\b",
    r"\b(?:i'?m|i am|not) (?:not )?(?:sure|certain)\b",
    r"\bunsure\b",
    r"\b(?:i )?(?:cannot|can'?t|can not|am unable to|'m unable to|unable to) (?:answer|determine|provide|say|tell|find|verify|confirm|know)\b",
    r"\b(?:no|not enough|insufficient|don'?t have (?:enough |any )?|do not have (?:enough |any )?)(?:reliable )?information\b",
    r"\bno (?:idea|answer)\b",
    r"\bi (?:have no|lack) (?:knowledge|idea)\b",
    r"\bunknown\b",
    r"\bi'?m sorry\b",
    r"\bi apologi[sz]e\b",
    r"\bnot (?:known|available)\b",
)
_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS))
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile(f"[{re.escape(string.punctuation.replace('+', ''))}’‘“”–—]")


def normalize_answer(text: str) -> str:
    """Lower-case, fold accents, drop punctuation (except ``+``) and articles, squeeze spaces."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    t = _PUNCT.sub(" ", t)
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def is_refusal(text: str) -> bool:
    """Whether ``text`` declines to answer (empty, or a refusal pattern)."""
    t = text.strip().lower().replace("’", "'")
    return not t or bool(_REFUSAL_RE.search(t))


def matches_gold(text: str, answers: Sequence[str]) -> bool:
    """Whether a normalised gold answer/alias occurs in the normalised ``text`` as whole words."""
    hay = f" {normalize_answer(text)} "
    for a in answers:
        needle = normalize_answer(a)
        if needle and f" {needle} " in hay:
            return True
        if needle.startswith("+") and f" {needle[1:]} " in hay:  # "+33" vs "33"
            return True
    return False


def answer_span(text: str) -> str:
    """The first non-empty line of a response: short-answer prompts ask for one line, and small models
    often ramble on after it (``"39\nYttrium is a chemical element with ..."``)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def grade_answer(text: str, answers: Sequence[str], first_line: bool = True) -> Grade:
    """Rule-based grade of one response (see the module docstring for the order of the rules).

    Args:
        text: The response.
        answers: Gold answer and aliases.
        first_line: Grade only :func:`answer_span` (the first non-empty line).
    """
    if not answers:
        raise ValueError("grade_answer needs at least one gold answer")
    if first_line:
        text = answer_span(text)
    if matches_gold(text, answers):
        return "correct"
    return "refused" if is_refusal(text) else "incorrect"


JUDGE_TEMPLATE = """You grade answers to factual questions.
Question: {question}
Gold answer (and accepted aliases): {gold}
Model response: {response}

Reply with one letter only:
A if the response gives the gold answer (hedging allowed),
B if the response commits to a different or contradicting answer,
C if the response declines to answer or does not give an answer."""


class JudgeGrader:
    """Grade with a judge model through any backend (A = correct, B = incorrect, C = refused).

    Args:
        backend: The judge backend (greedy decoding).
        template: Prompt with ``{question}``, ``{gold}`` and ``{response}`` fields.
    """

    def __init__(self, backend: Backend, template: str = JUDGE_TEMPLATE) -> None:
        for f in ("{question}", "{gold}", "{response}"):
            if f not in template:
                raise ValueError(f"judge template lacks the field {f}")
        self.backend = backend
        self.template = template

    def grade(self, questions: Sequence[str], answers: Sequence[Sequence[str]], responses: Sequence[str]
              ) -> list[Grade | None]:
        """Grades (``None`` = the judge's reply could not be parsed: unscored)."""
        reqs = [ChatRequest(messages=({"role": "user", "content": self.template.format(
            question=q, gold=" | ".join(a), response=r)},), max_tokens=4, id=f"judge/{i}")
            for i, (q, a, r) in enumerate(zip(questions, answers, responses, strict=True))]
        out: list[Grade | None] = []
        for comp in self.backend.generate(reqs):
            m = re.match(r"\s*\(?([ABCabc])\b", comp.text)
            out.append(None if m is None else {"a": "correct", "b": "incorrect", "c": "refused"}[m.group(1).lower()])
        return out
