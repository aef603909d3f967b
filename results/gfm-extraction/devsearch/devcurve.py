"""Dev curve: victim margin over the text prior vs pretraining epochs (dev graphs data_seed=1, seed 100)."""
import json, sys, time, torch
from trustlab.systems.gfm_extraction.config import Config, GraphSpec
from trustlab.systems.gfm_extraction.data import load_graphs, summaries
from trustlab.systems.gfm_extraction.method import GFM, pretrain_gfm, zero_shot_predict, mean_cosine
from trustlab.models.minilm import SentenceEncoder
from trustlab.utils.seed import derive_seed, make_generator
cfg = Config()
SEED, DS = 100, 1
enc = SentenceEncoder(None, max_length=64)
extra = GraphSpec("src_mind", ["verb.cognition", "verb.communication", "verb.competition", "verb.emotion", "verb.perception"])
S = load_graphs(list(cfg.source_graphs) + [extra], 80, SEED, enc, 0.5, DS)
T = load_graphs(cfg.target_graphs, 80, SEED, enc, 0.5, DS)
summ = [enc.encode(summaries(g, derive_seed(SEED, "summ", g.name))) for g in S]
name, res, learn, epochs = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
checkpoints = {0, 5, 10, 20, 40, 80, 160, 300}
out = []
torch.manual_seed(derive_seed(SEED, "victim-init"))
m = GFM("sage", 384, 256, residual=res != "plain", learn_text_proj=learn, propagate=res == "prop")
def ev(ep):
    if ep not in checkpoints: return
    r = {"epoch": ep}
    with torch.no_grad():
        for g in T:
            te = g.test_idx
            v = m.embed_graph(g.x, g.edge_index)[te]
            vp = zero_shot_predict(v, m.embed_text(g.prompts)); tp = zero_shot_predict(g.x[te], g.prompts); y = g.y[te]
            r[g.name] = [float((vp == y).float().mean()), float((tp == y).float().mean()), mean_cosine(g.x[te], v)]
    r["margin_mean"] = sum(r[g.name][0] - r[g.name][1] for g in T) / len(T)
    r["cos_text_mean"] = sum(r[g.name][2] for g in T) / len(T)
    out.append(r); print(name, json.dumps(r), flush=True)
    json.dump(out, open(f"/tmp/gfm/devcurve_{name}.json", "w"), indent=1)
m.eval(); ev(0); m.train()
pretrain_gfm(m, S, summ, epochs, 5e-4, make_generator(derive_seed(SEED, "aug")), on_epoch=ev)
