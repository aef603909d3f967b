"""Development search for the victim recipe: dev graphs (data_seed=1, run seed 100), never reported."""
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
src4 = list(cfg.source_graphs) + [extra]
t = time.time()
S = load_graphs(src4, 80, SEED, enc, 0.5, DS)
T = load_graphs(cfg.target_graphs, 80, SEED, enc, 0.5, DS)
summ = [enc.encode(summaries(g, derive_seed(SEED, "summ", g.name))) for g in S]
print("data", time.time() - t, flush=True)
cands = {"A_resid_learnproj_3src": (True, True, 3), "B_resid_frozenproj_4src": (True, False, 4),
         "C_nonresid_frozenproj_4src": (False, False, 4), "D_nonresid_learnproj_4src": (False, True, 4),
         "E_prop_frozenproj_4src": ("prop", False, 4), "F_prop_learnproj_4src": ("prop", True, 4)}
only = sys.argv[1:] or list(cands)
out = {}
for name in only:
    res, learn, ns = cands[name]
    torch.manual_seed(derive_seed(SEED, "victim-init"))
    m = GFM("sage", 384, 256, residual=bool(res), learn_text_proj=learn, propagate=res == "prop")
    secs = pretrain_gfm(m, S[:ns], summ[:ns], 300, 5e-4, make_generator(derive_seed(SEED, "aug")))
    r = {"secs": secs}
    with torch.no_grad():
        for g in T:
            te = g.test_idx
            v = m.embed_graph(g.x, g.edge_index)[te]
            vp = zero_shot_predict(v, m.embed_text(g.prompts))
            tp = zero_shot_predict(g.x[te], g.prompts)
            y = g.y[te]
            r[g.name] = {"victim": float((vp == y).float().mean()), "text": float((tp == y).float().mean()),
                         "cos_text_victim": mean_cosine(g.x[te], v), "fid_text": float((vp == tp).float().mean())}
    r["margin_mean"] = sum(r[g.name]["victim"] - r[g.name]["text"] for g in T) / len(T)
    out[name] = r
    print(name, json.dumps(r), flush=True)
    json.dump(out, open(f"/tmp/gfm/devsearch_{'_'.join(only) if sys.argv[1:] else 'all'}.json", "w"), indent=1)
