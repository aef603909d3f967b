"""WordNet 3.0 as real text-attributed graphs (Debian package ``wordnet-base``).

Data card
---------
- Source: Princeton WordNet 3.0 database files ``data.noun`` / ``data.verb`` as shipped by Debian's
  ``wordnet-base`` (``/usr/share/wordnet``; override with ``TRUSTLAB_WORDNET_DIR``). Licence: the
  WordNet 3.0 licence (permissive, attribution). 82,115 noun and 13,767 verb synsets.
- Node: a synset; text = ``"<first lemma>: <gloss>"`` (examples in quotes are dropped).
- Edge: any WordNet pointer (hypernym, hyponym, meronym, holonym, ...) between two selected synsets,
  undirected, de-duplicated.
- Label: the synset's lexicographer file (e.g. ``noun.animal``); class descriptions come from the
  ``lexnames(5WN)`` manual page of the same package (e.g. "nouns denoting animals").
- Graphs: a caller picks a set of lexicographer classes per graph; nodes are sampled by a seeded
  snowball walk over pointers restricted to those classes, with a per-class cap, so graphs are
  connected, realistic and roughly class-balanced.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from trustlab.errors import UserError

DEFAULT_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/opt/homebrew/share/wordnet")
LEXNAMES_MAN = "/usr/share/man/man5/lexnames.5WN.gz"


@dataclass
class Synset:
    """One parsed synset."""

    key: str  # "<pos><offset>"
    lexname: str
    lemma: str
    gloss: str
    pointers: list[str]


@dataclass
class TextGraph:
    """A text-attributed graph.

    Attributes:
        name: Graph name.
        texts: Node texts (length N).
        edge_index: ``(2, E)`` long tensor, undirected (both directions).
        y: ``(N,)`` class ids.
        class_names: Class names (lexnames).
        class_texts: Natural-language class descriptions used for zero-shot prompts.
        domain: Domain label (e.g. ``"noun"``/``"verb"``).
    """

    name: str
    texts: list[str]
    edge_index: torch.Tensor
    y: torch.Tensor
    class_names: list[str]
    class_texts: list[str]
    domain: str

    @property
    def num_nodes(self) -> int:
        return len(self.texts)

    def homophily(self) -> float:
        """Fraction of edges joining nodes of the same class."""
        if self.edge_index.numel() == 0:
            return float("nan")
        s, d = self.edge_index
        return float((self.y[s] == self.y[d]).float().mean())


def wordnet_dir() -> Path:
    """The folder holding ``data.noun``; a one-line :class:`UserError` when WordNet is not installed."""
    cands = [os.environ["TRUSTLAB_WORDNET_DIR"]] if os.environ.get("TRUSTLAB_WORDNET_DIR") else list(DEFAULT_DIRS)
    for c in cands:
        if (Path(c) / "data.noun").is_file():
            return Path(c)
    raise UserError(
        f"WordNet database not found (looked in {', '.join(cands)})",
        "install it with 'apt-get install wordnet-base' or set TRUSTLAB_WORDNET_DIR to the folder with data.noun",
    )


@lru_cache(maxsize=1)
def lexname_descriptions() -> dict[str, str]:
    """``{"noun.animal": "nouns denoting animals", ...}`` from lexnames(5WN), or derived from the names."""
    out: dict[str, str] = {}
    try:
        with gzip.open(LEXNAMES_MAN, "rt", errors="replace") as fh:
            for line in fh:
                m = re.match(r"^(\d\d)\t(\S+)\s*\t(.+?)\s*$", line)
                if m:
                    out[m.group(2)] = m.group(3).strip()
    except OSError:
        pass
    return out


def describe(lexname: str) -> str:
    """Natural-language description of a lexicographer class."""
    d = lexname_descriptions().get(lexname)
    if d:
        return d
    pos, _, topic = lexname.partition(".")
    return f"{pos}s about {topic}"


LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]


@lru_cache(maxsize=4)
def load_synsets(pos: str, folder: str | None = None) -> dict[str, Synset]:
    """Parse ``data.<pos>`` (``noun`` or ``verb``) into synsets keyed by ``"<n|v><offset>"``."""
    base = Path(folder) if folder else wordnet_dir()
    path = base / f"data.{pos}"
    if not path.is_file():
        raise UserError(f"WordNet file {str(path)!r} is missing", "reinstall wordnet-base")
    out: dict[str, Synset] = {}
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):
                continue  # licence header
            head, _, gloss = line.partition(" | ")
            f = head.split()
            try:
                offset, lexnum, ss_type, w_cnt = f[0], int(f[1]), f[2], int(f[3], 16)
                words = f[4 : 4 + 2 * w_cnt : 2]
                i = 4 + 2 * w_cnt
                p_cnt = int(f[i])
                ptrs = []
                for k in range(p_cnt):
                    sym, off, ppos = f[i + 1 + 4 * k : i + 4 + 4 * k]
                    ptrs.append(("n" if ppos == "n" else "v" if ppos == "v" else ppos) + off)
            except (IndexError, ValueError) as exc:
                raise UserError(f"malformed WordNet line in {str(path)!r}: {line[:60]!r}", "reinstall wordnet-base") from exc
            key = ("n" if ss_type == "n" else "v") + offset
            text_gloss = re.split(r';\s*"', gloss.strip())[0].strip()
            out[key] = Synset(key, LEXNAMES[lexnum], words[0].replace("_", " "), text_gloss, ptrs)
    return out


def build_graph(
    name: str,
    classes: list[str],
    per_class: int,
    seed: int,
    domain: str | None = None,
    folder: str | None = None,
) -> TextGraph:
    """Sample a connected WordNet text-attributed graph over ``classes`` (lexnames).

    Args:
        name: Graph name.
        classes: Lexicographer classes, all of one part of speech (e.g. ``["noun.animal", "noun.plant"]``).
        per_class: Maximum nodes per class.
        seed: Sampling seed.
        domain: Domain label; defaults to the part of speech.
        folder: WordNet folder (default: the installed package).
    """
    pos_set = {c.split(".")[0] for c in classes}
    if len(pos_set) != 1 or pos_set - {"noun", "verb"}:
        raise UserError(f"graph {name!r}: classes must all be noun.* or all verb.*, got {classes}", "fix the class list")
    unknown = [c for c in classes if c not in LEXNAMES]
    if unknown:
        raise UserError(f"unknown WordNet classes {unknown}", "use lexnames such as noun.animal or verb.motion")
    pos = pos_set.pop()
    syn = load_synsets(pos, folder)
    allowed = {k for k, s in syn.items() if s.lexname in classes}
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(classes, 0)
    chosen: dict[str, None] = {}
    pool = sorted(allowed)
    # Snowball walk: breadth-first from random seeds, restricted to allowed classes, capped per class.
    while any(v < per_class for v in counts.values()) and len(chosen) < len(allowed):
        open_classes = [c for c in classes if counts[c] < per_class]
        cands = [k for k in pool if syn[k].lexname in open_classes and k not in chosen]
        if not cands:
            break
        start = cands[int(rng.integers(len(cands)))]
        q = deque([start])
        budget = max(8, per_class // 4)
        while q and budget > 0:
            k = q.popleft()
            if k in chosen or counts[syn[k].lexname] >= per_class:
                continue
            chosen[k] = None
            counts[syn[k].lexname] += 1
            budget -= 1
            nbrs = [p for p in syn[k].pointers if p in allowed and p not in chosen]
            rng.shuffle(nbrs)
            q.extend(nbrs)
    keys = list(chosen)
    index = {k: i for i, k in enumerate(keys)}
    edges = set()
    for k in keys:
        for p in syn[k].pointers:
            j = index.get(p)
            if j is not None and j != index[k]:
                a, b = sorted((index[k], j))
                edges.add((a, b))
    e = torch.tensor(sorted(edges), dtype=torch.long).t() if edges else torch.zeros(2, 0, dtype=torch.long)
    edge_index = torch.cat([e, e.flip(0)], dim=1)
    cls_index = {c: i for i, c in enumerate(classes)}
    return TextGraph(
        name=name,
        texts=[f"{syn[k].lemma}: {syn[k].gloss}" for k in keys],
        edge_index=edge_index,
        y=torch.tensor([cls_index[syn[k].lexname] for k in keys], dtype=torch.long),
        class_names=list(classes),
        class_texts=[describe(c) for c in classes],
        domain=domain or pos,
    )
