"""IMPQ experiment: perplexity vs average bits for IMPQ and the baselines, per backend, over seeds.

Pipeline (one place): model + text -> SPQE bank (2/4-bit weights of every block) -> exact Shapley
(small models) -> per seed: SPQE trajectories -> plans for every (budget, method) -> per backend:
apply each distinct plan by weight swapping and measure held-out perplexity -> rows, claims, plots.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from trustlab.compression.allocate import avg_bits, budget_for_avg_bits, memory_bits, upgrade_costs
from trustlab.compression.backends import get_backend
from trustlab.compression.model import PrefixCache, WeightBank, block_param_counts, collect_hessians, mean_nll
from trustlab.compression.plan import BitPlan, export_formats
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.impq.baselines import allocate_by_score, block_io_stats, sensitivity_scores, zd_scores
from trustlab.systems.impq.config import Config
from trustlab.systems.impq.data import load_model, text_tokens, tiny_recipe_dict
from trustlab.systems.impq.method import IMPQ, MemoValue, SPQEResult, exact_shapley, spqe, value_table
from trustlab.systems.impq.units import Units
from trustlab.utils.io import atomic_write_json
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

MIXED_BASELINES = ("sensitivity", "lim", "zd", "act_norm", "random")


def _ppl(nll: float) -> float:
    return float(min(math.exp(min(nll, 69.0)), 1e30))


def row_nlls(model: Any, tokens: Any, batch_size: int = 8) -> list[float]:
    """Mean next-token NLL of every held-out row (``mean_nll`` row by row, in batches)."""
    import torch

    out: list[float] = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, tokens.shape[0], batch_size):
            x = tokens[i : i + batch_size].to(device)
            logits = model(input_ids=x).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
            out.extend(float(v) for v in nll.mean(dim=1))
    return out


def bootstrap_ppl(rows: list[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``exp(mean row NLL)`` over the held-out rows."""
    r = np.asarray(rows, dtype=float)
    idx = np.random.default_rng(seed).integers(0, r.size, size=(n_boot, r.size))
    means = r[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return _ppl(float(lo)), _ppl(float(hi))


def _fmt_bits(x: float) -> str:
    return f"{x:g}"


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run the IMPQ comparison (see module docstring) and return the record."""
    rec = ctx.record(cfg)
    unit = Units(ctx, cfg)  # resumable units keyed on the config without `backends` (see units.py)
    lm = load_model(cfg.model, tiny_recipe_dict(cfg.tiny), ctx.device)
    model = lm.model.to(ctx.device)
    calib, evalt = text_tokens(lm, cfg.seq_len, cfg.n_calib, cfg.n_eval)
    n_params = block_param_counts(model)
    groups = player_groups(len(n_params), cfg.block_group)
    n = len(groups)  # players: one decoder block each, or block_group consecutive blocks
    p_params = [sum(n_params[j] for j in g) for g in groups]
    costs = upgrade_costs(p_params)
    mname = lm.name
    log.info("model %s: %d blocks (%d players), %d quantized weights", mname, len(n_params), n, sum(n_params))

    def block_bits(mask: np.ndarray) -> list[int]:
        """Per-block bit widths of a player mask (True = 2 bits)."""
        return [2 if mask[i] else 4 for i, g in enumerate(groups) for _ in g]

    def player_mask(bits: tuple[int, ...]) -> np.ndarray:
        return np.array([bits[g[0]] == 2 for g in groups])

    fp_nll = unit("fp_nll", lambda: mean_nll(model, evalt, cfg.batch_size))
    need_hess = cfg.spqe_backend == "gptq" or "gptq" in cfg.backends
    n_hess = cfg.n_calib_gptq or cfg.n_calib
    hess_rows = calib if n_hess == cfg.n_calib else text_tokens(lm, cfg.seq_len, n_hess, 1)[0]
    hess = collect_hessians(model, hess_rows, cfg.batch_size) if need_hess else None

    def hkey(backend: str) -> str:
        """Key suffix of units computed with the GPTQ Hessians (``n_calib_gptq`` is not in the unit hash)."""
        return f"/hessian_rows={n_hess}" if backend == "gptq" else ""

    # ---- SPQE value function: calibration NLL with the blocks in S at 2 bits, the rest at 4 -------------
    bank = WeightBank(model, get_backend(cfg.spqe_backend, cfg.group_size), (2, 4), hess)
    # progressive evaluation: blocks before the one that changed are not recomputed (identical outputs)
    pcache = PrefixCache(model, bank).install()

    def v(mask: np.ndarray) -> float:
        bank.set_bits(block_bits(mask))
        return mean_nll(model, calib, cfg.batch_size, cache=pcache)

    value = MemoValue(v)
    exact_phi: np.ndarray | None = None
    oracle: dict[str, Any] = {}
    if n <= cfg.exact_max_blocks:
        table = np.asarray(unit("exact_table" + hkey(cfg.spqe_backend), lambda: value_table(value, n).tolist()))
        for s in range(2**n):  # share the exact evaluations with SPQE (deterministic value function)
            value.cache_[np.array([(s >> i) & 1 for i in range(n)], dtype=bool).tobytes()] = float(table[s])
        exact_phi = exact_shapley(table, n)
        oracle = _oracle(table, costs, {x: budget_for_avg_bits(n_params, x) for x in cfg.budgets})

    def scores_fn() -> dict[str, list[float]]:
        sens = sensitivity_scores(value, n)
        bank.restore()
        lim, act = block_io_stats(model, calib, cfg.batch_size)
        return {"sensitivity": sens.tolist(), "lim": group_scores(lim, n_params, groups).tolist(),
                "act_norm": group_scores(act, n_params, groups).tolist(),
                "zd": group_scores(zd_scores(model), n_params, groups).tolist()}

    scores = unit("scores" + hkey(cfg.spqe_backend), scores_fn)

    # ---- per seed: SPQE ---------------------------------------------------------------------------------
    spqe_res: dict[int, SPQEResult] = {}
    # adjacent-pair SII estimates ride on the same trajectories (same permutations and marginals)
    need_sii = cfg.interactions == "sii" or "impq_sii" in cfg.methods
    for seed in cfg.seeds:
        def spqe_fn(seed: int = seed) -> dict[str, Any]:
            res = spqe(value, n, cfg.n_permutations, np.random.default_rng(seed), sii=need_sii,
                       desc=f"SPQE seed {seed}", rel_se=cfg.spqe_rel_se, min_perms=cfg.spqe_min_permutations)
            out = {"perms": res.perms.tolist(), "marginals": res.marginals.tolist(), "v_empty": res.v_empty,
                   "v_full": res.v_full, "n_evals": value.n_evals}
            if res.sii_sum is not None:
                out["sii_sum"], out["sii_count"] = res.sii_sum.tolist(), res.sii_count.tolist()
            return out

        u = unit(f"spqe/seed={seed}" + hkey(cfg.spqe_backend), spqe_fn, seed=seed)
        spqe_res[seed] = SPQEResult(np.asarray(u["perms"]), np.asarray(u["marginals"]), u["v_empty"], u["v_full"],
                                    np.asarray(u["sii_sum"]) if "sii_sum" in u else None,
                                    np.asarray(u["sii_count"]) if "sii_count" in u else None)

    # ---- plans ------------------------------------------------------------------------------------------
    plans: dict[tuple[float, str, int], tuple[int, ...]] = {}
    impq_fits: dict[int, IMPQ] = {}
    for seed in cfg.seeds:
        impq_fits[seed] = IMPQ(cfg.n_permutations, cfg.alpha, cfg.interactions, cfg.solver).fit_from(spqe_res[seed])
    for x in cfg.budgets:
        B = budget_for_avg_bits(n_params, x)
        for method in cfg.methods:
            for seed in cfg.seeds:
                if method == "impq_matched":
                    continue  # planned per evaluation backend below
                if method == "uniform":
                    if abs(x - round(x)) > 1e-9:
                        continue  # uniform only where the budget is an integer bit width
                    plans[(x, method, seed)] = (int(round(x)),) * len(n_params)
                    continue
                if method == "impq":
                    q = impq_fits[seed].allocate(costs, B)
                elif method == "impq_diag":
                    q = IMPQ(cfg.n_permutations, 1.0, "cov", cfg.solver).fit_from(spqe_res[seed]).allocate(costs, B)
                elif method == "impq_sii":
                    q = IMPQ(cfg.n_permutations, cfg.alpha, "sii", cfg.solver).fit_from(spqe_res[seed]).allocate(costs, B)
                elif method == "random":
                    q = allocate_by_score(np.random.default_rng(10_000 + seed).random(n), costs, B, cfg.solver)
                else:
                    q = allocate_by_score(scores[method], costs, B, cfg.solver)
                plans[(x, method, seed)] = tuple(block_bits(q))

    # which allocators reach the exhaustive calibration optimum (where a baseline does, IMPQ can at best tie
    # in-sample on the quantity it optimizes)
    for key, o in oracle.items():
        x = float(key)
        o["reached_by"] = sorted(m for m in cfg.methods if m != "uniform" and all(
            (bits := plans.get((x, m, s))) is not None
            and np.flatnonzero(player_mask(bits)).tolist() == o["low_players"] for s in cfg.seeds))

    # save the IMPQ plans (first seed) as JSON with their exports
    s0 = cfg.seeds[0]
    for x in cfg.budgets:
        bits = plans.get((x, "impq", s0))
        if bits is None:
            continue
        fit = impq_fits[s0]
        plan = BitPlan.from_block_bits(model, list(bits), backend=cfg.spqe_backend, group_size=cfg.group_size,
                                       method="impq", model=cfg.model,
                                       meta={"target_avg_bits": x, "avg_bits": avg_bits(n_params, bits),
                                             "phi": fit.phi_.tolist(), "se": fit.se_.tolist(),
                                             "a": fit.a_.tolist(), "K": fit.K_.tolist(), "seed": s0,
                                             "players": groups})
        plan.save(ctx.out / "plans" / f"impq_bits={_fmt_bits(x)}.json")
        atomic_write_json(ctx.out / "plans" / f"impq_bits={_fmt_bits(x)}.exports.json", export_formats(plan))

    # ---- evaluate every distinct plan with every backend ----------------------------------------------
    distinct = sorted(set(plans.values()))
    plan_hash = hashlib.sha1(json.dumps(distinct).encode()).hexdigest()[:10]
    # in-sample value of every {2,4} plan: the calibration NLL that SPQE/IMPQ optimize (memoized)
    calib_nll = unit(f"calib/plans={plan_hash}" + hkey(cfg.spqe_backend), lambda: {
        json.dumps(list(bits)): value(player_mask(bits)) for bits in distinct if set(bits) <= {2, 4}})
    pcache.remove()
    log.info("prefix cache: %d block calls reused, %d computed", pcache.hits, pcache.misses)
    bank.restore()
    bank.quant_.clear()  # free the SPQE bank's quantized copies before the evaluation banks
    results: dict[str, dict[str, float]] = {}
    for b in cfg.backends:
        def eval_fn(b: str = b) -> dict[str, float]:
            be = get_backend(b, cfg.group_size)
            ok = [bits for bits in distinct if set(bits) <= set(be.supported_bits)]  # quanto has no 3-bit
            bk = WeightBank(model, be, sorted({bit for bits in ok for bit in bits}), hess)
            out: dict[str, Any] = {}
            for bits in ok:
                bk.set_bits(list(bits))
                rows = row_nlls(model, evalt, cfg.batch_size)
                out[json.dumps(list(bits))] = float(np.mean(rows))  # rows have equal token counts
                out["rows|" + json.dumps(list(bits))] = rows
            bk.restore()
            return out

        results[b] = unit(f"eval/backend={b}/plans={plan_hash}" + hkey(b), eval_fn)

    # ---- our change `impq_matched`: SPQE run with each evaluation backend, its plans scored on that backend ----
    matched: dict[str, dict[str, Any]] = {}
    if "impq_matched" in cfg.methods:
        for b in cfg.backends:
            def matched_fn(b: str = b) -> dict[str, Any]:
                bk = WeightBank(model, get_backend(b, cfg.group_size), (2, 4), hess)
                pc = PrefixCache(model, bk).install()
                try:
                    def vb(mask: np.ndarray) -> float:
                        bk.set_bits(block_bits(mask))
                        return mean_nll(model, calib, cfg.batch_size, cache=pc)

                    val = MemoValue(vb)
                    out: dict[str, Any] = {}
                    for seed in cfg.seeds:
                        res = spqe(val, n, cfg.n_permutations, np.random.default_rng(seed), desc=f"SPQE {b} seed {seed}",
                                   rel_se=cfg.spqe_rel_se, min_perms=cfg.spqe_min_permutations)
                        fit = IMPQ(cfg.n_permutations, cfg.alpha, "cov", cfg.solver).fit_from(res)
                        for x in cfg.budgets:
                            bits = block_bits(fit.allocate(costs, budget_for_avg_bits(n_params, x)))
                            bk.set_bits(list(bits))
                            out[f"{_fmt_bits(x)}|{seed}"] = {"bits": bits, "rows": row_nlls(model, evalt, cfg.batch_size),
                                                             "phi": fit.phi_.tolist()}
                    out["n_evals"] = val.n_evals
                    return out
                finally:
                    pc.remove()
                    bk.restore()

            matched[b] = unit(f"matched/backend={b}" + hkey(b), matched_fn)

    for b in cfg.backends:
        for x in cfg.budgets:
            setting = f"model={mname};backend={b};bits={_fmt_bits(x)}"
            for method in cfg.methods:
                for seed in cfg.seeds:
                    bits = plans.get((x, method, seed))
                    if bits is None:
                        continue
                    nll = results[b].get(json.dumps(list(bits)))
                    if nll is None:
                        continue  # plan not expressible with this backend's bit widths
                    extra = {}
                    if b == cfg.spqe_backend and json.dumps(list(bits)) in calib_nll:
                        extra["calib_nll"] = calib_nll[json.dumps(list(bits))]
                    rows = results[b].get("rows|" + json.dumps(list(bits)))
                    if rows is not None:  # 95 % bootstrap interval over held-out rows
                        extra["ppl_lo"], extra["ppl_hi"] = bootstrap_ppl(rows, seed=0)
                    rec.add_row(setting, method, seed, ppl=_ppl(nll), nll=nll, avg_bits=avg_bits(n_params, bits),
                                bits_with_overhead=memory_bits(n_params, bits, cfg.group_size) / sum(n_params),
                                n_4bit=sum(1 for t in bits if t == 4), **extra)

    for b, u in matched.items():
        for x in cfg.budgets:
            for seed in cfg.seeds:
                got = u[f"{_fmt_bits(x)}|{seed}"]
                bits, rows = got["bits"], got["rows"]
                nll = float(np.mean(rows))
                lo, hi = bootstrap_ppl(rows, seed=0)
                rec.add_row(f"model={mname};backend={b};bits={_fmt_bits(x)}", "impq_matched", seed, ppl=_ppl(nll),
                            nll=nll, avg_bits=avg_bits(n_params, bits),
                            bits_with_overhead=memory_bits(n_params, bits, cfg.group_size) / sum(n_params),
                            n_4bit=sum(1 for t in bits if t == 4), ppl_lo=lo, ppl_hi=hi)

    # ---- SPQE diagnostics -------------------------------------------------------------------------------
    for seed in cfg.seeds:
        res = spqe_res[seed]
        m_used = res.marginals.shape[0]  # < n_permutations when the convergence rule stopped SPQE
        for m in sorted({m for m in (2, 4, 8, 16, 24, 32, 64, 128, m_used) if m <= m_used}):
            h = res.head(m)
            point = {"se_mean": float(h.se.mean()),
                     "se_rel_median": h.rel_se}
            if exact_phi is not None:
                point["rel_err"] = float(np.abs(h.phi - exact_phi).sum() / max(np.abs(exact_phi).sum(), 1e-12))
            rec.add_series(f"model={mname};spqe", "impq", seed, m, **point)
    eff_gap = max(abs(float(r.phi.sum()) - (r.v_full - r.v_empty)) for r in spqe_res.values())
    row_sum = max(float(np.abs(IMPQ(cfg.n_permutations).fit_from(r).C_.sum(axis=1)).max()) for r in spqe_res.values())
    rec.extra.update({
        "model": mname, "n_blocks": len(n_params), "n_players": n, "players": groups,
        "block_params": n_params, "fp_ppl": _ppl(fp_nll),
        "v_all4_calib_nll": spqe_res[s0].v_empty, "v_all2_calib_nll": spqe_res[s0].v_full,
        "phi_exact": None if exact_phi is None else exact_phi.tolist(),
        "phi_spqe": {str(s): r.phi.tolist() for s, r in spqe_res.items()},
        "phi_se": {str(s): r.se.tolist() for s, r in spqe_res.items()},
        "spqe_permutations": {str(s): int(r.marginals.shape[0]) for s, r in spqe_res.items()},
        "spqe_rule": {"rel_se": cfg.spqe_rel_se, "min_permutations": cfg.spqe_min_permutations,
                      "cap": cfg.n_permutations},
        "scores": scores, "efficiency_gap": eff_gap, "cov_row_sum_max": row_sum,
        "value_evaluations": value.n_evals,
        "oracle_calib": oracle,
        "plans": {f"{_fmt_bits(x)}|{m}|{s}": list(bits) for (x, m, s), bits in plans.items()},
    })
    _claims(rec, cfg, mname, n_params, costs, plans, exact_phi, spqe_res, eff_gap, row_sum, oracle)
    _plot(rec, cfg, mname, ctx)
    return rec


def _oracle(table: np.ndarray, costs: np.ndarray, budgets: dict[float, float]) -> dict[str, Any]:
    """Exhaustive optimum of the calibration value under each budget (reference; needs the full table).

    Returns ``{budget: {"calib_nll": min v(S), "low_players": sorted S}}`` over the masks that fill the
    budget exactly as every allocator must (upgrade cost ``<= B`` and ``> B - min c``).
    """
    n = len(costs)
    masks = np.array([[(s >> i) & 1 for i in range(n)] for s in range(2**n)], dtype=bool)
    extra = (~masks).astype(float) @ costs
    out: dict[str, Any] = {}
    for x, B in budgets.items():
        ok = (extra <= B + 1e-6) & (extra > B - costs.min())
        if ok.any():
            s = int(np.flatnonzero(ok)[np.argmin(table[ok])])
            out[_fmt_bits(x)] = {"calib_nll": float(table[s]), "low_players": np.flatnonzero(masks[s]).tolist()}
    return out


def player_groups(n_blocks: int, block_group: int) -> list[list[int]]:
    """Players as lists of consecutive block indices (``block_group`` blocks each, the last may be shorter)."""
    return [list(range(s, min(s + block_group, n_blocks))) for s in range(0, n_blocks, block_group)]


def group_scores(scores: np.ndarray, n_params: list[int], groups: list[list[int]]) -> np.ndarray:
    """Per-player score: the weight-count-weighted mean of its blocks' scores."""
    w = np.asarray(n_params, dtype=float)
    return np.array([float((scores[g] * w[g]).sum() / w[g].sum()) for g in groups])


def _mean_ppl(rec: RunRecord, setting: str, method: str) -> float | None:
    for s in rec.summary:
        if s["setting"] == setting and s["method"] == method:
            return float(s["ppl_mean"])
    return None


def _claims(rec: RunRecord, cfg: Config, mname: str, n_params: list[int], costs: np.ndarray,
            plans: dict, exact_phi: np.ndarray | None, spqe_res: dict[int, SPQEResult],
            eff_gap: float, row_sum: float, oracle: dict[str, Any]) -> None:
    mixed = [x for x in cfg.budgets if 2.0 < x < 4.0]
    others = [m for m in MIXED_BASELINES if m in cfg.methods]
    need = min(3, len(mixed))
    for b in cfg.backends:
        wins, ties, same, figs = 0, 0, 0, {}
        for x in cfg.budgets:
            setting = f"model={mname};backend={b};bits={_fmt_bits(x)}"
            ours = _mean_ppl(rec, setting, "impq")
            base = {m: p for m in others if (p := _mean_ppl(rec, setting, m)) is not None}
            if ours is None or not base:
                continue
            best = min(base.values())
            figs[f"impq@{_fmt_bits(x)}"] = ours
            figs[f"best_baseline@{_fmt_bits(x)}"] = best
            wins += int(ours < best)
            ties += int(ours <= best)
            # a tie where a baseline returned exactly IMPQ's plan for every seed cannot become a win
            same += int(ours == best and any(all(plans.get((x, m, s)) == plans.get((x, "impq", s)) for s in cfg.seeds)
                                             for m, p in base.items() if p == best))
        figs["budgets_won"] = wins
        figs["budgets_won_or_tied"] = ties
        figs["budgets_tied_with_identical_plan"] = same
        rec.add_claim(f"D1_{b}", f"{mname}/{b}: IMPQ perplexity below every other 2/4-bit allocator "
                      f"({', '.join(others)}) at >= {need} budgets", wins >= need, **figs)
    b0 = cfg.spqe_backend
    if b0 in cfg.backends:
        wins, ties, figs = 0, 0, {}
        for x in mixed:
            setting = f"model={mname};backend={b0};bits={_fmt_bits(x)}"
            cal = {s["method"]: s.get("calib_nll_mean") for s in rec.summary if s["setting"] == setting}
            best = min((cal[m] for m in others if cal.get(m) is not None), default=None)
            if cal.get("impq") is None or best is None:
                continue
            figs[f"impq@{_fmt_bits(x)}"], figs[f"best_baseline@{_fmt_bits(x)}"] = cal["impq"], best
            wins += int(cal["impq"] < best - 1e-12)
            ties += int(cal["impq"] <= best + 1e-12)
        figs["budgets_won"], figs["budgets_won_or_tied"] = wins, ties
        reached = [o.get("reached_by", []) for k, o in oracle.items() if float(k) in mixed]
        if reached:  # exhaustive calibration optimum known (small games)
            figs["budgets_impq_at_calib_optimum"] = sum("impq" in r for r in reached)
            figs["budgets_a_baseline_at_calib_optimum"] = sum(any(m in others for m in r) for r in reached)
        rec.add_claim(f"D1_calib_{b0}", f"diagnostic: in-sample calibration NLL (the SPQE value) of IMPQ's plan is "
                      f"below or equal to every other allocator's at all mixed budgets ({b0})",
                      ties == len(mixed) and len(mixed) > 0, **figs)
    # efficiency and zero row sums
    rec.add_claim("D2_efficiency", "SPQE Shapley values sum to NLL(all 2-bit) - NLL(all 4-bit) (|gap| < 1e-6)",
                  eff_gap < 1e-6, max_gap=eff_gap)
    rec.add_claim("D2_rowsum", "covariance interaction rows sum to ~0 (max |row sum| < 1e-6)", row_sum < 1e-6,
                  max_row_sum=row_sum)
    # budget met exactly
    worst = 0.0
    ok = True
    for (x, m, _s), bits in plans.items():
        if m == "uniform":
            continue
        B = budget_for_avg_bits(n_params, x)
        extra = float(sum(c for c, t in zip(upgrade_costs(n_params), bits, strict=True) if t == 4))
        ok &= extra <= B + 1e-6 and extra > B - costs.min()
        worst = max(worst, abs(avg_bits(n_params, bits) - x))
    rec.add_claim("D2_budget", "every mixed plan fills the memory budget (no block fits on top, none over)", ok,
                  max_abs_avg_bits_minus_target=worst)
    if exact_phi is not None:
        errs = {m: float(np.mean([np.abs(r.head(m).phi - exact_phi).sum() / np.abs(exact_phi).sum()
                                  for r in spqe_res.values()])) for m in (2, cfg.n_permutations)}
        rec.add_claim("C6_convergence", "SPQE error vs exact Shapley shrinks from M=2 to M=max",
                      errs[cfg.n_permutations] < errs[2], rel_err_m2=errs[2], rel_err_mmax=errs[cfg.n_permutations])
    b0 = cfg.spqe_backend if cfg.spqe_backend in cfg.backends else cfg.backends[0]
    def pair(other: str) -> list[tuple[float, float | None, float | None]]:
        return [(x, _mean_ppl(rec, f"model={mname};backend={b0};bits={_fmt_bits(x)}", "impq"),
                 _mean_ppl(rec, f"model={mname};backend={b0};bits={_fmt_bits(x)}", other)) for x in mixed]

    def figs_of(vals: list, other: str) -> dict[str, float | None]:
        return {**{f"impq@{x:g}": o for x, o, _ in vals}, **{f"{other}@{x:g}": r for x, _, r in vals}}

    if "random" in cfg.methods and mixed:
        vals = pair("random")
        rec.add_claim("C3_random", f"IMPQ below random at every mixed budget ({b0})",
                      all(o < r for _, o, r in vals), **figs_of(vals, "random"))
    if "impq_diag" in cfg.methods and mixed:
        vals = pair("impq_diag")
        rec.add_claim("C5_interactions", f"measured (not asserted by the paper): IMPQ (alpha={cfg.alpha}) no worse "
                      f"than the diagonal-only variant (alpha=1) at most mixed budgets ({b0})",
                      sum(o <= d for _, o, d in vals) * 2 > len(vals), **figs_of(vals, "impq_diag"))
    if "impq_sii" in cfg.methods and mixed:
        vals = pair("impq_sii")
        rec.add_claim("R_sii", f"report (our ablation): the pairwise Shapley-interaction-index game (impq_sii) "
                      f"below the covariance IMPQ at most mixed budgets ({b0})",
                      sum(d < o for _, o, d in vals) * 2 > len(vals), **figs_of(vals, "impq_sii"))
    if "uniform" in cfg.methods and 3.0 in cfg.budgets:
        st = f"model={mname};backend={b0};bits=3"
        u, o = _mean_ppl(rec, st, "uniform"), _mean_ppl(rec, st, "impq")
        if u is not None and o is not None:
            rec.add_claim("R_uniform3", "report: uniform 3-bit vs the IMPQ {2,4} mix at 3.0 bits "
                          "(holds = IMPQ is lower; the research note expects uniform to win)", o < u,
                          impq=o, uniform=u)


def _plot(rec: RunRecord, cfg: Config, mname: str, ctx: RunContext) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, axes = plt.subplots(1, len(cfg.backends), figsize=(4.2 * len(cfg.backends), 3.6), squeeze=False)
    for ax, b in zip(axes[0], cfg.backends, strict=True):
        for method in cfg.methods:
            pts = list(s for s in rec.summary
                         if s["method"] == method and s["setting"].startswith(f"model={mname};backend={b};"))
            if not pts:
                continue
            pts.sort(key=lambda s: s["avg_bits_mean"])
            xs = [s["avg_bits_mean"] for s in pts]
            ys = [s["ppl_mean"] for s in pts]
            if all("ppl_lo_mean" in s for s in pts):  # bootstrap interval over held-out rows (seed-averaged ends)
                err = [[y - s["ppl_lo_mean"] for y, s in zip(ys, pts, strict=True)],
                       [s["ppl_hi_mean"] - y for y, s in zip(ys, pts, strict=True)]]
            else:
                err = [s.get("ppl_std", 0.0) for s in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=method)
        ax.set_yscale("log")
        ax.set_xlabel("average bits per quantized weight")
        ax.set_title(f"{mname} / {b} (bars: 95 % bootstrap over held-out rows)", fontsize=8)
    axes[0][0].set_ylabel("held-out perplexity (per byte/token)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out / "plots" / "ppl_vs_bits.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    rec.plots.append("plots/ppl_vs_bits.png")
