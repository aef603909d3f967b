"""``trustlab refusal-index``: the Refusal Index of any model or endpoint on your QA file (two passes only).

Examples:
    trustlab refusal-index --base-url http://127.0.0.1:8000/v1 --data simpleqa_test_set.csv --out ri/ --concurrency 16
    trustlab refusal-index --model ./my-local-model --data qa.jsonl --out ri/ --prompts standard,cautious
    trustlab refusal-index --model toy --data embedded --out ri/            # built-in toy model, no weights
    trustlab refusal-index --from-samples samples_pass1.jsonl samples_pass2.jsonl --out ri/

Writes ``OUT/report.json`` (RI with its interval, refusal rate, accuracy, C/A, F-score, ECE/AUROC where
log-probs exist, labelled with the model that answered), ``OUT/samples.jsonl`` (question, pass,
prompt, answer, grade) and the answer cache ``OUT/answers.jsonl``; rerunning the same command
(against the same model, on any URL, with any concurrency) resumes without asking anything twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustlab.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def resolve_identity(base_url: str, model_name: str | None, timeout: float) -> str:
    """The model name to label results with: ``--model-name`` (checked against the server's list) or the
    only model ``GET /v1/models`` reports."""
    from trustlab.llm.base import BackendError
    from trustlab.llm.http import list_models

    try:
        served = list_models(base_url, timeout=timeout)
    except BackendError as exc:
        if model_name:
            return model_name
        raise UserError(f"cannot ask {base_url} which model it serves ({exc})",
                        "check --base-url (it ends in /v1), or pass --model-name NAME") from exc
    if model_name:
        if served and model_name not in served:
            raise UserError(f"{base_url} does not serve model {model_name!r} (it serves: {', '.join(served)})",
                            "pass one of those with --model-name")
        return model_name
    if len(served) != 1:
        raise UserError(f"{base_url} serves {len(served)} models ({', '.join(served) or 'none listed'})",
                        "pick one with --model-name NAME")
    return served[0]


def _prompts(text: str) -> list[str]:
    from trustlab.systems.refusal_index.method import PROMPTS

    names = [p.strip() for p in text.split(",") if p.strip()]
    allowed = [k for k in PROMPTS if k != "forced"]
    bad = [p for p in names if p not in allowed]
    if not names or bad:
        raise UserError(f"unknown pass-1 prompt(s) {', '.join(bad) or text!r}", f"use some of: {','.join(allowed)}")
    return names


@app.command()
def refusal_index(
    out: Annotated[Path, typer.Option("--out", help="Output folder (report.json, samples.jsonl, answers.jsonl).")],
    model: Annotated[str | None, typer.Option(help="Local HF model folder/name (offline), or 'toy' (built-in).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Served model name (default: the one /v1/models lists).")] = None,
    data: Annotated[str | None, typer.Option(help="QA file (JSONL, CSV, SimpleQA CSV) or 'embedded'.")] = None,
    data_format: Annotated[str, typer.Option(help="auto, generic, simpleqa, triviaqa, nq or popqa.")] = "auto",
    limit: Annotated[int, typer.Option(help="Evaluate a seeded category-stratified subset of N questions (0: all).")] = 0,
    prompts: Annotated[str, typer.Option(help="Pass-1 prompts, comma-separated (standard, cautious).")] = "standard",
    concurrency: Annotated[int, typer.Option(help="Requests in flight (endpoint) / batch size (local model).")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Generation budget per answer.")] = 24,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 needs --samples K >= 2.")] = 0.0,
    samples: Annotated[int, typer.Option(help="Answers per question and pass at temperature > 0.")] = 1,
    grader: Annotated[str, typer.Option(help="rule (normalised gold match) or judge (an LLM judge endpoint).")] = "rule",
    judge_base_url: Annotated[str | None, typer.Option(help="Judge endpoint (--grader judge).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name (--grader judge).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per request after a reset, timeout or 5xx.")] = 4,
    backoff: Annotated[float, typer.Option(help="First retry delay in seconds (doubles each retry).")] = 1.0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the subset and the bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="Device of a local model (cpu, cuda).")] = "cpu",
    from_samples: Annotated[tuple[Path, Path] | None, typer.Option(
        help="Two lm-evaluation-harness --log_samples files: PASS1 (refusal allowed) PASS2 (forced answer).")] = None,
    harness_filter: Annotated[str | None, typer.Option(help="Harness filter to read (--from-samples; default: the first).")] = None,
    correct_metric: Annotated[str | None, typer.Option(
        help="Take correctness from this harness metric (e.g. exact_match) instead of the rule grader.")] = None,
) -> None:
    """Refusal Index (Pan et al., ICLR 2026) of a model or endpoint: two passes on your QA file."""
    from trustlab.systems.refusal_index.tool import summary_lines

    if from_samples is not None:
        if model or base_url:
            raise UserError("--from-samples reads finished harness runs; it takes no --model/--base-url",
                            "drop --model/--base-url, or drop --from-samples to evaluate a model")
        from trustlab.systems.refusal_index.lmeval import from_harness_samples

        report = from_harness_samples(from_samples[0], from_samples[1], out, filter_name=harness_filter,
                                      correct_metric=correct_metric, n_boot=n_boot, seed=seed)
        for line in summary_lines(report):
            typer.echo(line)
        return
    if (model is None) == (base_url is None):
        raise UserError("pass exactly one of --model and --base-url",
                        "--model ./folder (local HF model) or --base-url http://host:port/v1 (endpoint)")
    if data is None:
        raise UserError("--data is missing", "pass a QA file (JSONL, CSV, SimpleQA CSV) or --data embedded")
    plist = _prompts(prompts)
    for name, v, lo in (("--concurrency", concurrency, 1), ("--max-tokens", max_tokens, 1), ("--samples", samples, 1),
                        ("--retries", retries, 0), ("--n-boot", n_boot, 0), ("--limit", limit, 0)):
        if v < lo:
            raise UserError(f"{name} {v} must be >= {lo}", f"pass {name} {max(lo, 1)} or more")
    if timeout <= 0 or backoff < 0 or temperature < 0:
        raise UserError("--timeout must be > 0, --backoff >= 0 and --temperature >= 0", "fix the value")
    if temperature > 0 and samples < 2:
        raise UserError(f"--temperature {temperature:g} makes every answer a random draw, and the two-pass estimate "
                        "is biased (attenuated) under sampled decoding",
                        "pass --samples K (K >= 2: the many-sample RI is reported beside the two-pass one), or "
                        "--temperature 0")
    if temperature == 0 and samples > 1:
        raise UserError(f"--samples {samples} needs --temperature > 0 (greedy answers repeat)",
                        "pass --temperature 0.7 (say), or --samples 1")
    if grader not in ("rule", "judge"):
        raise UserError(f"unknown --grader {grader!r}", "use rule or judge")
    if grader == "judge" and not judge_base_url:
        raise UserError("--grader judge needs --judge-base-url", "e.g. --judge-base-url http://127.0.0.1:8001/v1")
    if grader == "rule" and (judge_base_url or judge_model):
        raise UserError("--judge-base-url/--judge-model are used only with --grader judge", "add --grader judge")

    from trustlab.data.factual_qa import load_factual_qa, load_qa_file, sample_items
    from trustlab.llm.base import BackendError
    from trustlab.llm.store import ResponseStore
    from trustlab.systems.refusal_index.tool import Decoding, JudgeGrader, evaluate

    items = load_factual_qa() if data == "embedded" else load_qa_file(data, data_format)
    if limit:
        items = sample_items(items, limit, seed=seed, stratify=True)
    meta: dict[str, object] = {"data": data, "data_format": data_format, "limit": limit}
    if base_url is not None:
        from trustlab.llm.http import OpenAIChatBackend

        identity = resolve_identity(base_url, model_name, timeout=min(timeout, 30.0))
        backend = OpenAIChatBackend(base_url, identity, timeout=timeout, max_retries=retries, backoff=backoff,
                                    concurrency=concurrency, logprobs=True)
        meta["endpoint"] = base_url
    elif model == "toy":
        from trustlab.systems.refusal_index.toy import ToyQABackend

        backend = ToyQABackend(items)
        identity = model_name or backend.name
    else:
        from trustlab.llm.hf import HFBackend

        assert model is not None
        p = Path(model)
        identity = model_name or (str(p.resolve()) if p.exists() else model)
        backend = HFBackend(model, device=device, batch_size=concurrency, name=identity)
    meta["backend"] = type(backend).__name__
    judge = None
    if grader == "judge":
        from trustlab.llm.http import OpenAIChatBackend

        assert judge_base_url is not None
        jid = resolve_identity(judge_base_url, judge_model, timeout=min(timeout, 30.0))
        jb = OpenAIChatBackend(judge_base_url, jid, timeout=timeout, max_retries=retries, backoff=backoff,
                               concurrency=concurrency)
        judge = JudgeGrader(jb, f"judge:{jid}", ResponseStore(out / "judge_answers.jsonl", f"judge:{jid}"),
                            batch_size=4 * concurrency)
    cache = out / "answers.jsonl"
    try:
        report = evaluate(backend, identity, items, out, plist, Decoding(max_tokens, temperature, samples), judge=judge,
                          cache=cache, concurrency=concurrency, n_boot=n_boot, seed=seed, meta=meta)
    except BackendError as exc:
        kept = len(ResponseStore(cache, identity)) if cache.is_file() else 0
        first = str(exc).splitlines()[0][:300]
        raise UserError(f"the endpoint stopped answering ({first}); {kept} answers so far are kept in {cache}",
                        "fix or restart the server and rerun the same command: it resumes where it stopped") from exc
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"wrote {out / 'report.json'} and {out / 'samples.jsonl'}")
