"""``trustlab quantize``: checkpoints reloaded by stock transformers, sizes, bit plans, bad input, resume;
the HQQ / Quanto / GPTQ backends checked against RTN, Quanto's own attributes and an independent GPTQ."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trustlab.cli import main
from trustlab.compression.backends import get_backend
from trustlab.compression.quant import gptq_quantize, output_error

FAST = ["--permutations", "4", "--seq-len", "32", "--n-calib", "4", "--n-eval", "8"]


def _eval_tokens(rep: dict) -> torch.Tensor:
    from trustlab.systems.impq.data import LoadedModel, text_tokens

    s = rep["settings"]
    return text_tokens(LoadedModel(None, "bytes", None), s["seq_len"], s["n_calib"], s["n_eval"])[1]


def _run(args: list[str]) -> int:
    return main(["quantize", *args])


@pytest.fixture(scope="module")
def ct_out(tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("ct")
    assert _run(["tiny", "--avg-bits", "3", "--backend", "rtn", "--out", str(out), *FAST]) == 0
    return out


def test_compressed_tensors_checkpoint_reloads_with_stock_transformers(ct_out) -> None:  # noqa: ANN001
    from safetensors import safe_open

    from trustlab.systems.impq.quantize import stock_perplexity

    rep = json.loads((ct_out / "report.json").read_text())
    plan = json.loads((ct_out / "bitplan.json").read_text())
    # the reloaded model's perplexity equals the report's
    ppl = stock_perplexity(ct_out, _eval_tokens(rep))
    assert abs(ppl - rep["ppl"]) / rep["ppl"] < 0.01
    # per-module bits, Shapley values, interactions and the budget travel with the checkpoint
    assert set(plan["modules"].values()) == {2, 4} and len(plan["modules"]) == 4 * 7
    n = len(rep["block_bits"])
    assert len(plan["meta"]["phi"]) == n and np.asarray(plan["meta"]["interactions_K"]).shape == (n, n)
    assert plan["meta"]["target_avg_bits"] == 3.0 and plan["meta"]["budget_extra_bits"] > 0
    assert abs(rep["avg_bits"] - 3.0) < 1e-9
    # weights stored packed: int32 words holding `bits` bits per weight, no float copy of a planned weight
    with safe_open(str(ct_out / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
        code_bytes = 0
        for mod in plan["modules"]:
            assert f"{mod}.weight" not in keys
            t = fh.get_tensor(f"{mod}.weight_packed")
            assert t.dtype == torch.int32
            code_bytes += t.numel() * 4
    theory = plan["meta"]["theoretical_code_bytes"]
    assert abs(code_bytes - theory) / theory < 0.15
    assert rep["code_bytes"] == code_bytes
    cfg = json.loads((ct_out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    assert sorted(g["weights"]["num_bits"] for g in cfg["config_groups"].values()) == [2, 4]


def test_gguf_checkpoint_has_per_tensor_types_and_reloads(tmp_path) -> None:  # noqa: ANN001
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from trustlab.systems.impq.quantize import stock_perplexity

    torch.manual_seed(0)  # a 256-wide byte-level Llama (Q2_K needs input widths divisible by 256)
    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    out = tmp_path / "q"
    assert _run([str(tmp_path / "m"), "--avg-bits", "3", "--backend", "hqq", "--format", "gguf",
                 "--out", str(out), *FAST]) == 0
    rep = json.loads((out / "report.json").read_text())
    plan = json.loads((out / "bitplan.json").read_text())
    assert sorted(rep["block_bits"]) == [2, 4]
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    blk = {2: "Q2_K", 4: "Q4_1"}
    for i, b in enumerate(rep["block_bits"]):
        assert types[f"blk.{i}.attn_q.weight"] == blk[b] and types[f"blk.{i}.ffn_down.weight"] == blk[b]
    assert types["token_embd.weight"] == "F32"
    code = sum(int(t.n_bytes) for t in reader.tensors if t.tensor_type.name in ("Q2_K", "Q4_1"))
    theory = plan["meta"]["theoretical_bytes_with_fp16_scale_and_zero"]
    assert abs(code - theory) / theory < 0.15
    ppl = stock_perplexity(out, _eval_tokens(rep))
    assert abs(ppl - rep["ppl"]) / rep["ppl"] < 0.01


@pytest.mark.parametrize("args, needle", [
    (["--backend", "hqqq"], "unknown quantization backend"),
    (["--backend", "quanto", "--allocator", "uniform", "--avg-bits", "3"], "cannot quantize to 3 bits"),
    (["--avg-bits", "4.5"], "outside [2, 4]"),
    (["--format", "ggml"], "unknown checkpoint format"),
    (["--allocator", "magic"], "unknown allocator"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle) -> None:  # noqa: ANN001
    assert _run(["tiny", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_folder_without_config_json(tmp_path, capsys) -> None:  # noqa: ANN001
    (tmp_path / "m").mkdir()
    assert _run([str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_interrupted_quantize_resumes(tmp_path, monkeypatch, ct_out) -> None:  # noqa: ANN001
    import trustlab.systems.impq.quantize as qz

    out = tmp_path / "o"
    calls = {"n": 0}
    orig = qz.mean_nll

    def dies_in_spqe(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 6:  # the float model's NLL, then 4 value evaluations, then the crash
            raise RuntimeError("killed")
        return orig(*a, **k)

    args = ["tiny", "--avg-bits", "3", "--backend", "rtn", "--out", str(out), *FAST]
    monkeypatch.setattr(qz, "mean_nll", dies_in_spqe)
    with pytest.raises(RuntimeError, match="killed"):
        _run(args)
    saved = json.loads(next((out / ".work").glob("values-*.json")).read_text())
    assert len(saved["values"]) == 4  # the finished evaluations are on disk
    monkeypatch.undo()
    assert _run(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["value_evaluations_computed_this_run"] == rep["value_evaluations"] - 4
    first = json.loads((ct_out / "report.json").read_text())
    assert rep["block_bits"] == first["block_bits"] and math.isclose(rep["ppl"], first["ppl"], rel_tol=1e-9)


def test_allocator_option_uniform_and_baselines(tmp_path) -> None:  # noqa: ANN001
    assert _run(["tiny", "--avg-bits", "2", "--allocator", "uniform", "--verify", "--out", str(tmp_path / "u"), *FAST]) == 0
    u = json.loads((tmp_path / "u" / "report.json").read_text())
    assert u["block_bits"] == [2, 2, 2, 2]
    assert u["reloaded_ppl_rel_diff"] < 0.01  # --verify: reloaded by stock transformers
    assert _run(["tiny", "--avg-bits", "2.5", "--allocator", "zd", "--backend", "quanto",
                 "--out", str(tmp_path / "z"), *FAST]) == 0
    z = json.loads((tmp_path / "z" / "report.json").read_text())
    plan = json.loads((tmp_path / "z" / "bitplan.json").read_text())
    assert sorted(z["block_bits"]) == [2, 2, 2, 4] and plan["method"] == "zd" and len(plan["meta"]["scores"]) == 4
    # 2-bit everywhere costs perplexity against the float model (the quantizer is not a no-op)
    assert u["ppl"] > u["fp_ppl"]


# ---- backends ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_weights() -> list[torch.Tensor]:
    from trustlab.compression.model import all_block_linears
    from trustlab.systems.impq.quantize import _load

    lm = _load("tiny")
    return [m.weight.detach().float() for lins in all_block_linears(lm.model) for m in lins.values()]


@pytest.mark.parametrize("bits", [3, 4])
def test_hqq_weight_error_not_worse_than_rtn(tiny_weights, bits) -> None:  # noqa: ANN001
    err = {}
    for name in ("rtn", "hqq"):
        be = get_backend(name, 32)
        err[name] = sum(float((w - be.quantize_weight(w, bits)).pow(2).sum()) for w in tiny_weights)
    assert err["hqq"] <= err["rtn"]


def test_quanto_group_size_is_applied() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 128)
    for gs in (32, 64):
        qt, _ = get_backend("quanto", gs)._frozen(w, 4)
        assert qt._scale.numel() == w.numel() // gs  # one scale per group of gs input columns
        q = get_backend("quanto", gs).quantize_codes(w, 4)
        assert torch.allclose(q.dequantize(), get_backend("quanto", gs).quantize_weight(w, 4), atol=1e-5)
    # without the override Quanto would quantize a 128-wide input per row: the groups change the weights
    e32 = float((w - get_backend("quanto", 32).quantize_weight(w, 4)).pow(2).sum())
    e128 = float((w - get_backend("quanto", 128).quantize_weight(w, 4)).pow(2).sum())
    assert e32 < e128


def _reference_gptq(w: torch.Tensor, h: torch.Tensor, bits: int, gs: int, damp: float = 0.01) -> torch.Tensor:
    """GPTQ written from the paper's Algorithm 1 (no lazy blocks), independently of trustlab's code:
    columns left to right, each column's rounding error spread over the later columns with the upper
    Cholesky factor of H^-1; (scale, zero) of a group fitted on the updated weights when it starts."""
    w = w.double().clone()
    h = h.double().clone()
    h += damp * h.diag().mean() * torch.eye(h.shape[0], dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    qmax = 2**bits - 1
    q = torch.zeros_like(w)
    for j in range(w.shape[1]):
        if j % gs == 0:
            g = w[:, j : j + gs]
            lo, hi = g.min(1).values.clamp(max=0), g.max(1).values.clamp(min=0)
            s = ((hi - lo) / qmax).clamp(min=1e-8)
            z = torch.round(-lo / s)
        q[:, j] = (torch.clamp(torch.round(w[:, j] / s) + z, 0, qmax) - z) * s
        err = (w[:, j] - q[:, j]) / u[j, j]
        w[:, j:] -= err[:, None] * u[j, j:][None, :]
    return q.float()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_output_error_matches_an_independent_reference(bits) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(512, 64, generator=g) @ torch.randn(64, 64, generator=g)  # correlated inputs
    w = torch.randn(48, 64, generator=g)
    h = 2 * x.T @ x / x.shape[0]
    ours = gptq_quantize(w, h, bits, 16).dequantize()
    ref = _reference_gptq(w, h, bits, 16)
    e_ours, e_ref = output_error(w, ours, x), output_error(w, ref, x)
    assert abs(e_ours - e_ref) / e_ref < 0.05
    assert e_ours < output_error(w, get_backend("rtn", 16).quantize_weight(w, bits), x)  # GPTQ beats RTN


def test_gptq_export_is_sequential(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Block i's Hessians are collected after blocks < i hold their quantized weights."""
    import trustlab.systems.impq.quantize as qz
    from trustlab.compression import model as cm

    seen: list[bool] = []
    orig = cm.collect_hessians

    def spy(model, tokens, batch_size=8, names=None):  # noqa: ANN001, ANN202
        if names is not None and ".layers.1." in next(iter(names)):
            w0 = model.model.layers[0].self_attn.q_proj.weight
            seen.append(len(torch.unique(w0[0, :32])) <= 16)  # 2/4-bit codes: at most 16 levels per group
        return orig(model, tokens, batch_size, names)

    monkeypatch.setattr(qz, "collect_hessians", spy)
    assert _run(["tiny", "--avg-bits", "3", "--backend", "gptq", "--out", str(tmp_path / "g"), *FAST]) == 0
    assert seen == [True]


def test_quantize_help() -> None:
    assert main(["quantize", "--help"]) == 0


def test_backend_check_weight_errors_on_a_small_model() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from trustlab.systems.impq.backend_check import weight_errors

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4))
    e = weight_errors(m, blocks=(0, 1), group_sizes=(32,), bits=(2, 4))
    assert set(e) == {"gs=32;bits=2", "gs=32;bits=4"}
    for b in ("rtn", "hqq"):
        assert 0 < e["gs=32;bits=4"][b] < e["gs=32;bits=2"][b] < 1
