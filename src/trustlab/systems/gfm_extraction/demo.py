"""Embedded demo assets: a small WordNet graph folder and a small pretrained victim GFM.

``trustlab extract --victim trustlab.systems.gfm_extraction.demo:victim --graph <DEMO_GRAPH> ...`` runs
offline in seconds. Both assets were written by :func:`build_assets` (WordNet 3.0 from Debian's
``wordnet-base``, MiniLM features); the victim follows the default config's readout recipe at a small
width (64), pretrained for 150 epochs on one source graph whose classes are disjoint from the demo
graph's (its recipe is stored in the file's metadata).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trustlab.systems.gfm_extraction.method import GFM, VictimService
from trustlab.utils.io import load_tensors, save_tensors

ASSETS = Path(__file__).parent / "assets"
DEMO_GRAPH = ASSETS / "demo_graph"
DEMO_VICTIM = ASSETS / "demo_victim.safetensors"
DEMO_CLASSES = ["noun.animal", "noun.plant", "noun.food"]
DEMO_SOURCES = ["noun.act", "noun.communication", "noun.cognition", "noun.state", "noun.attribute"]


def victim_model() -> GFM:
    """The embedded victim as a :class:`GFM` (eval mode)."""
    state, meta = load_tensors(DEMO_VICTIM)
    spec = json.loads(meta["spec"])
    model = GFM(spec["arch"], spec["dim"], spec["hidden"], residual=spec["residual"],
                learn_text_proj=spec["learn_text_proj"], propagate=spec["propagate"])
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def victim() -> VictimService:
    """Factory for ``--victim trustlab.systems.gfm_extraction.demo:victim``: the embedded victim as a service."""
    return VictimService(victim_model())


def write_graph_folder(tg, folder: Path) -> Path:  # noqa: ANN001 - a TextGraph
    """Write a :class:`~trustlab.data.wordnet.TextGraph` in the folder format ``trustlab extract`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.json").write_text(json.dumps(dict(zip(tg.class_names, tg.class_texts, strict=True)), indent=1) + "\n")
    with open(folder / "nodes.jsonl", "w") as fh:
        for t, y in zip(tg.texts, tg.y.tolist(), strict=True):
            fh.write(json.dumps({"text": t, "label": tg.class_names[y]}) + "\n")
    e = tg.edge_index
    with open(folder / "edges.csv", "w") as fh:
        fh.write("src,dst\n")
        for s, d in e[:, e[0] < e[1]].t().tolist():
            fh.write(f"{s},{d}\n")
    return folder


def build_assets(per_class: int = 30, hidden: int = 64, epochs: int = 150, seed: int = 7) -> None:
    """Regenerate the demo graph folder and the demo victim (needs WordNet and MiniLM; about a minute)."""
    from trustlab.data.wordnet import build_graph
    from trustlab.models.minilm import SentenceEncoder
    from trustlab.systems.gfm_extraction.config import Config
    from trustlab.systems.gfm_extraction.data import featurise, summaries
    from trustlab.systems.gfm_extraction.method import pretrain_gfm
    from trustlab.utils.seed import make_generator

    cfg = Config()
    enc = SentenceEncoder(None, max_length=cfg.max_text_tokens)
    write_graph_folder(build_graph("demo_graph", DEMO_CLASSES, per_class, seed), DEMO_GRAPH)
    src = featurise(build_graph("demo_source", DEMO_SOURCES, per_class * 2, seed + 1), enc, 0.5, seed)
    torch.manual_seed(seed)
    spec = {"arch": cfg.victim_arch, "dim": int(src.x.shape[1]), "hidden": hidden, "residual": cfg.victim_residual,
            "learn_text_proj": cfg.victim_learn_text_proj, "propagate": cfg.victim_propagate}
    model = GFM(spec["arch"], spec["dim"], hidden, residual=spec["residual"], learn_text_proj=spec["learn_text_proj"],
                propagate=spec["propagate"])
    pretrain_gfm(model, [src], [enc.encode(summaries(src, seed))], epochs, cfg.victim_lr, make_generator(seed))
    save_tensors(DEMO_VICTIM, {k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
                 {"spec": json.dumps(spec), "recipe": json.dumps({"per_class": per_class * 2, "epochs": epochs,
                                                                  "seed": seed, "sources": DEMO_SOURCES})})


if __name__ == "__main__":  # pragma: no cover - asset maintenance
    build_assets()
