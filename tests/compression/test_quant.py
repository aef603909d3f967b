"""Compression core: RTN/GPTQ maths, backends, budgets, the BQP solvers, bit plans (JSON, apply, export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trustlab.compression import (
    BitPlan,
    WeightBank,
    apply_plan,
    avg_bits,
    budget_for_avg_bits,
    export_formats,
    export_packed,
    get_backend,
    gptq_quantize,
    load_packed,
    output_error,
    rtn_quantize,
    solve_bqp,
    upgrade_costs,
)
from trustlab.compression.allocate import solve_brute, solve_greedy, solve_scip
from trustlab.errors import UserError


class TinyStack(nn.Module):
    """A 'causal LM' shell with ``model.layers`` blocks of two linears (enough for the plumbing)."""

    def __init__(self, n: int = 4, d: int = 32, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList()
        for _ in range(n):
            blk = nn.Module()
            blk.up = nn.Linear(d, 2 * d, bias=False)
            blk.down = nn.Linear(2 * d, d, bias=False)
            blk.up.weight.data = torch.randn(2 * d, d, generator=g) / d**0.5
            blk.down.weight.data = torch.randn(d, 2 * d, generator=g) / (2 * d) ** 0.5
            self.model.layers.append(blk)


def _layer_and_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 64, generator=g)
    mix = torch.randn(64, 64, generator=g) * 0.5
    x = torch.randn(1024, 64, generator=g) @ mix + 0.3 * torch.randn(1024, 64, generator=g)
    return w, x


def test_rtn_codes_roundtrip_and_error_decreases_with_bits() -> None:
    w, x = _layer_and_inputs()
    errs = []
    for b in (2, 3, 4, 8):
        q = rtn_quantize(w, b, 16)
        assert int(q.codes.max()) <= 2**b - 1
        errs.append(output_error(w, q.dequantize(), x))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.01


@pytest.mark.parametrize("bits", [2, 4])
def test_our_gptq_has_lower_output_error_than_rtn(bits: int) -> None:
    w, x = _layer_and_inputs()
    h = 2 * x.T @ x / x.shape[0]
    rtn = output_error(w, rtn_quantize(w, bits, 16).dequantize(), x)
    gptq = output_error(w, gptq_quantize(w, h, bits, 16).dequantize(), x)
    assert gptq < 0.9 * rtn


def test_gptq_with_identity_hessian_equals_rtn() -> None:
    # with H = I the error feedback vanishes: GPTQ reduces to round-to-nearest
    w, _ = _layer_and_inputs(1)
    q = gptq_quantize(w, torch.eye(64), 3, 16, damp=0.0)
    assert torch.equal(q.codes, rtn_quantize(w, 3, 16).codes)


def test_hqq_backend_quantizes_a_layer() -> None:
    pytest.importorskip("hqq")
    w, x = _layer_and_inputs(2)
    be = get_backend("hqq", 16)
    e2 = output_error(w, be.quantize_weight(w, 2), x)
    e4 = output_error(w, be.quantize_weight(w, 4), x)
    assert e4 < e2 < 1.0


def test_quanto_backend_quantizes_a_layer_with_our_group_size() -> None:
    pytest.importorskip("optimum.quanto")
    w, x = _layer_and_inputs(2)
    be = get_backend("quanto", 16)
    q2, q4 = be.quantize_weight(w, 2), be.quantize_weight(w, 4)
    assert output_error(w, q4, x) < output_error(w, q2, x) < 1.0
    # the group size is honoured: at most 2^bits distinct values in every (row, group of 16 columns)
    groups = q2.reshape(w.shape[0], -1, 16)
    assert max(len(torch.unique(g)) for g in groups.reshape(-1, 16)) <= 4


def test_unknown_backend_and_bad_group() -> None:
    with pytest.raises(UserError, match="did you mean 'gptq'"):
        get_backend("gptqq")
    with pytest.raises(ValueError, match="does not divide"):
        rtn_quantize(torch.randn(4, 10), 4, 3)


def test_budget_formula_and_exact_fill() -> None:
    n_params = [100] * 8
    assert budget_for_avg_bits(n_params, 2.0) == 0.0
    assert budget_for_avg_bits(n_params, 4.0) == pytest.approx(1600.0)
    costs = upgrade_costs(n_params)
    rng = np.random.default_rng(0)
    a = rng.normal(size=8)
    K = rng.normal(size=(8, 8)) * 0.1
    for x in (2.5, 3.0, 3.5):
        q = solve_bqp(a, K, costs, budget_for_avg_bits(n_params, x))
        bits = [2 if t else 4 for t in q]
        assert avg_bits(n_params, bits) == pytest.approx(x)  # budget met exactly
    with pytest.raises(UserError):
        budget_for_avg_bits(n_params, 4.5)


def test_solvers_agree_with_brute_force() -> None:
    rng = np.random.default_rng(1)
    n = 10
    a = rng.normal(size=n)
    A = rng.normal(size=(n, n)) * 0.5
    K = (A + A.T) / 2
    costs = rng.integers(1, 5, size=n).astype(float) * 100
    B = costs.sum() * 0.45
    qb = solve_brute(a, K, costs, B)
    obj = lambda q: float(a @ q + q @ K @ q)  # noqa: E731
    pytest.importorskip("pyscipopt")
    qs = solve_scip(a, K, costs, B)
    assert obj(qs.astype(float)) == pytest.approx(obj(qb.astype(float)), abs=1e-6)
    qg = solve_greedy(a, K, costs, B)
    assert float(((~qg) * costs).sum()) <= B + 1e-9


def test_plan_json_roundtrip_apply_and_export(tmp_path) -> None:  # noqa: ANN001
    net = TinyStack()
    plan = BitPlan.from_block_bits(net, [4, 2, 2, 4], backend="rtn", group_size=16, method="test")
    path = plan.save(tmp_path / "plan.json")
    back = BitPlan.load(path)
    assert back.modules == plan.modules and back.block_bits(net) == [4, 2, 2, 4]
    assert back.avg_bits(net) == pytest.approx(3.0)
    ref = TinyStack()
    apply_plan(net, back)
    # applied weights equal the backend's quantization, per planned bit width
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            w0 = dict(ref.named_modules())[name].weight
            assert torch.allclose(m.weight, rtn_quantize(w0, back.modules[name], 16).dequantize())
    ex = export_formats(back)
    assert ex["gptqmodel_dynamic"]["bits"] in (2, 4) and ex["hqq_modules"]
    # packed export reloads to the same weights (fp16 scales)
    fresh = TinyStack()
    export_packed(fresh, back, tmp_path / "packed.safetensors")
    reload_net = TinyStack()
    got = load_packed(reload_net, tmp_path / "packed.safetensors")
    assert got.modules == back.modules
    for (n1, m1), (_, m2) in zip(net.named_modules(), reload_net.named_modules(), strict=True):
        if isinstance(m1, nn.Linear):
            assert torch.allclose(m1.weight, m2.weight, atol=2e-3, rtol=1e-2), n1


def test_plan_errors(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.json"
    bad.write_text('{"modules": 3}')
    with pytest.raises(UserError, match="not a trustlab bit plan"):
        BitPlan.load(bad)
    with pytest.raises(UserError, match="not a Linear"):
        apply_plan(TinyStack(), BitPlan(modules={"model.layers.9.up": 2}))


def test_weight_bank_switches_in_place() -> None:
    net = TinyStack()
    w0 = net.model.layers[1].up.weight.detach().clone()
    bank = WeightBank(net, get_backend("rtn", 16), (2, 4))
    bank.set_bits([4, 2, 4, 4])
    assert torch.allclose(net.model.layers[1].up.weight, rtn_quantize(w0, 2, 16).dequantize())
    bank.restore()
    assert torch.equal(net.model.layers[1].up.weight, w0)


def test_prefix_cache_gives_the_same_nll_as_full_passes() -> None:
    """Along a progressive trajectory (and arbitrary jumps) the cached NLL equals the uncached one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trustlab.compression import PrefixCache, mean_nll

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    net = LlamaForCausalLM(cfg).eval()
    tokens = torch.randint(0, 64, (3, 16))
    bank = WeightBank(net, get_backend("rtn", 16), (2, 4))
    states = [[4] * 5, [4, 4, 2, 4, 4], [4, 4, 2, 2, 4], [2, 4, 2, 2, 4], [2, 2, 2, 2, 2], [4, 2, 4, 4, 4]]
    ref = []
    for bits in states:
        bank.set_bits(bits)
        ref.append(mean_nll(net, tokens, batch_size=2))
    with PrefixCache(net, bank) as pc:
        got = []
        for bits in states:
            bank.set_bits(bits)
            got.append(mean_nll(net, tokens, batch_size=2, cache=pc))
        assert pc.hits > 0
    assert got == pytest.approx(ref, abs=1e-6)
    assert "forward" not in net.model.layers[0].__dict__  # wrappers removed on exit
