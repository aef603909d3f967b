"""Refusal Index beyond its own model: outcome models the estimator does not assume, per-seed stability,
the quick scale (claims C6/C7 and the figures), and results labelled with the model that answered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trustlab.data.factual_qa import load_factual_qa, sample_items
from trustlab.llm.server import OpenAICompatServer
from trustlab.runner import run_system
from trustlab.systems.refusal_index.config import Config, RealConfig
from trustlab.systems.refusal_index.experiment import answering_model
from trustlab.systems.refusal_index.method import SimulatedLLM, estimate_sim
from trustlab.systems.refusal_index.toy import ToyQABackend


def _bias(model: SimulatedLLM, q: float = 0.3, n: int = 4000, seeds: range = range(3)) -> float:
    errs = []
    for s in seeds:
        pop = model.population(n, np.random.default_rng(s))
        out = model.evaluate(pop, q, np.random.default_rng(100 + s))
        errs.append(estimate_sim(out, 0, 0.95, 0).ri - out.ri_true)
    return float(np.mean(errs))


def test_outcome_models_outside_the_estimator_shift_the_two_pass_estimate() -> None:
    base = _bias(SimulatedLLM(0.5, 0.6))
    assert abs(base) < 0.03  # the estimator's own model: consistent
    # sampled decoding attenuates (a draw per question loses rank information)
    assert _bias(SimulatedLLM(0.5, 0.6, decoding_noise=1.0)) < base - 0.1
    # overconfident questions (unknown but confidently answered) sit in the answered-and-wrong cell
    cl = SimulatedLLM(0.5, 0.6, cluster=0.15)
    pop = cl.population(4000, np.random.default_rng(0))
    assert pop.knowledge.size == 4000
    assert abs(_bias(cl)) > 0.1
    # the latent state changes only where asked: cluster/hetero leave the Gaussian draw's first part alone
    g = SimulatedLLM(0.5, 0.6).population(100, np.random.default_rng(1))
    h = SimulatedLLM(0.5, 0.6, hetero=1.0).population(100, np.random.default_rng(1))
    assert np.allclose(g.confidence, h.confidence) and not np.allclose(g.knowledge, h.knowledge)
    with pytest.raises(ValueError):
        SimulatedLLM(0.5, 0.6, cluster=1.5)


def test_quick_scale_reports_validity_and_per_seed_stability(tmp_path: Path) -> None:
    rec, out = run_system("refusal-index", "quick", out=tmp_path / "run")
    claims = {c["id"]: c for c in rec.claims}
    assert {"C1", "C2", "C6", "C7"} <= set(claims)
    v = rec.extra["validity"]
    assert set(v) == {"noise=0.5", "cluster=0.15", "gaussian (estimator's model)"}
    for name, row in v.items():
        rows = [r for r in rec.rows if r["setting"] == f"sim;refusal_rate=0.3;{name}"]
        if rows:  # the reported bias is the two-pass estimate minus the truth of the same runs
            assert row["bias"] == pytest.approx(np.mean([r["ri_est"] - r["ri_true"] for r in rows]))
    assert "direct_bias" in v["noise=0.5"]  # the many-sample RI beside the two-pass one
    ps = rec.extra["stability_per_seed"]["per_seed"]
    assert list(ps) == [0] and len(ps[0]["estimates"]) == 3
    assert claims["C7"]["figures"]["range_seed0"] == pytest.approx(max(ps[0]["estimates"]) - min(ps[0]["estimates"]))
    for f in ("ri_vs_refusal_rate.png", "validity.png"):
        assert (out / "plots" / f).stat().st_size > 10_000
    with pytest.raises(Exception, match="unknown diagnostic setting"):
        Config(sim=Config().sim.__class__(noisy_settings=["cluster=2"])).validate()


def test_experiment_labels_an_endpoint_run_with_the_served_model() -> None:
    items = sample_items(load_factual_qa(), 10, seed=0)
    with OpenAICompatServer(ToyQABackend(items), model_name="served-x") as srv:
        r = RealConfig(backend="openai", base_url=srv.base_url)  # real.model left at its default
        assert answering_model(r) == "served-x"
        assert answering_model(RealConfig(backend="openai", base_url=srv.base_url, model="served-x")) == "served-x"
    assert json.dumps(answering_model(RealConfig())) == '"smollm2-135m"'
