"""Embedded data: WordNet text-attributed graphs with frozen-MiniLM node features.

See :mod:`trustlab.data.wordnet` for the data card. Each :class:`Graph` bundles a text-attributed
graph, its node features (sentence embeddings of the node texts, as in GraphCLIP), its class-prompt
embeddings and a seeded train/test split. Users can bring their own graph with :func:`graph_from_files`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from trustlab.data.wordnet import TextGraph, build_graph, load_synsets
from trustlab.errors import UserError
from trustlab.models.minilm import SentenceEncoder
from trustlab.utils.seed import derive_seed, make_generator


@dataclass
class Graph:
    """A text-attributed graph ready for encoders.

    Attributes:
        tg: The raw text graph.
        x: ``(N, d)`` node features (normalised text embeddings).
        prompts: ``(C, d)`` normalised embeddings of the class prompts (public text encoder output).
        train_idx / test_idx: Seeded split of node ids (queries come from train, evaluation on test).
    """

    tg: TextGraph
    x: torch.Tensor
    prompts: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor

    @property
    def name(self) -> str:
        return self.tg.name

    @property
    def edge_index(self) -> torch.Tensor:
        return self.tg.edge_index

    @property
    def y(self) -> torch.Tensor:
        return self.tg.y


def class_prompt(description: str) -> str:
    """GraphCLIP-style prompt: a template plus the class description."""
    return f"this word belongs to the category of {description}"


def split(n: int, test_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded permutation split into (train, test) node ids."""
    perm = torch.randperm(n, generator=make_generator(seed))
    k = int(round(n * test_frac))
    return perm[k:].sort().values, perm[:k].sort().values


def load_graphs(specs: list, per_class: int, seed: int, encoder: SentenceEncoder, test_frac: float,
                data_seed: int = 0) -> list[Graph]:
    """Build and featurise WordNet graphs (sampled with ``data_seed``; split with ``seed``)."""
    out = []
    for spec in specs:
        tg = build_graph(spec.name, list(spec.classes), per_class, derive_seed(data_seed, "graph", spec.name))
        out.append(featurise(tg, encoder, test_frac, derive_seed(seed, "split", spec.name)))
    return out


def featurise(tg: TextGraph, encoder: SentenceEncoder, test_frac: float, seed: int) -> Graph:
    """Encode node texts and class prompts; split nodes."""
    x = encoder.encode(tg.texts)
    prompts = encoder.encode([class_prompt(d) for d in tg.class_texts])
    tr, te = split(tg.num_nodes, test_frac, seed)
    return Graph(tg, x, prompts, tr, te)


def summaries(g: Graph, seed: int, n_neighbours: int = 2) -> list[str]:
    """Templated neighbourhood summaries used for victim pretraining (stand-in for GraphCLIP's LLM summaries).

    Each says what the node is about (its class description) and names a few neighbours, e.g.
    ``"nouns denoting acts or actions: destruction, related to disaster and kill"``.
    """
    gen = make_generator(seed)
    nbrs: list[list[int]] = [[] for _ in range(g.tg.num_nodes)]
    for s, d in g.edge_index.t().tolist():
        nbrs[s].append(d)
    lemmas = [t.split(":", 1)[0] for t in g.tg.texts]
    out = []
    for i, lemma in enumerate(lemmas):
        ns = nbrs[i]
        if ns:
            pick = torch.randperm(len(ns), generator=gen)[:n_neighbours].tolist()
            rel = " and ".join(lemmas[ns[j]] for j in pick)
            out.append(f"{g.tg.class_texts[int(g.y[i])]}: {lemma}, related to {rel}")
        else:
            out.append(f"{g.tg.class_texts[int(g.y[i])]}: {lemma}")
    return out


def graph_from_files(folder: str | Path, encoder: SentenceEncoder, test_frac: float = 0.5, seed: int = 0) -> Graph:
    """Load a user's text-attributed graph from a folder.

    Expected files: ``nodes.jsonl`` (one ``{"text": str, "label": str}`` per line, in node order),
    ``edges.csv`` (``src,dst`` integer node ids, header optional), ``classes.json`` (``{label: description}``).
    """
    folder = Path(folder)
    need = ["nodes.jsonl", "edges.csv", "classes.json"]
    missing = [f for f in need if not (folder / f).is_file()]
    if missing:
        raise UserError(f"graph folder {str(folder)!r} lacks {missing}", f"provide {', '.join(need)}")
    try:
        classes = json.loads((folder / "classes.json").read_text())
        nodes = [json.loads(line) for line in (folder / "nodes.jsonl").read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON in {str(folder)!r}: {exc.msg} (line {exc.lineno})", "fix the file") from exc
    names = list(classes)
    idx = {c: i for i, c in enumerate(names)}
    texts, ys = [], []
    for i, n in enumerate(nodes):
        if not isinstance(n, dict) or "text" not in n or n.get("label") not in idx:
            raise UserError(f"nodes.jsonl line {i + 1} needs 'text' and a 'label' listed in classes.json", "fix it")
        texts.append(str(n["text"]))
        ys.append(idx[n["label"]])
    edges = []
    for j, line in enumerate((folder / "edges.csv").read_text().splitlines()):
        parts = line.replace(" ", "").split(",")
        if j == 0 and not parts[0].isdigit():
            continue
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or max(map(int, parts)) >= len(texts):
            raise UserError(f"edges.csv line {j + 1} ({line!r}) is not 'src,dst' with ids < {len(texts)}", "fix it")
        edges.append((int(parts[0]), int(parts[1])))
    e = torch.tensor(edges, dtype=torch.long).t() if edges else torch.zeros(2, 0, dtype=torch.long)
    tg = TextGraph(folder.name, texts, torch.cat([e, e.flip(0)], 1), torch.tensor(ys), names,
                   [str(classes[c]) for c in names], "user")
    return featurise(tg, encoder, test_frac, seed)


def wordnet_available() -> bool:
    """Whether the WordNet database can be read."""
    try:
        load_synsets("noun")
        return True
    except UserError:
        return False
