"""Throughput of ``trustlab refusal-index`` against a loopback server that answers at once.

    python -m trustlab.systems.refusal_index.bench --out results/refusal-index/bench

A separate process serves the built-in toy QA model over the OpenAI-compatible API (it answers in
microseconds), so the measured time is the tool's own overhead: HTTP client, retries bookkeeping,
answer cache (one fsync per batch), grading, bootstrap, report writing. 1,000 questions go through
both passes (pass 1 ``standard`` on every question, pass 2 ``forced`` on the refused ones) at each
concurrency, each from an empty cache, in one run (the machine may be shared, so compare ratios).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from trustlab.utils.io import atomic_write_json


def _serve(n: int, q: Any) -> None:
    from trustlab.data.factual_qa import load_factual_qa, sample_items
    from trustlab.llm.server import OpenAICompatServer
    from trustlab.systems.refusal_index.toy import ToyQABackend

    srv = OpenAICompatServer(ToyQABackend(sample_items(load_factual_qa(), n, seed=0)), model_name="toy-bench")
    q.put(srv.base_url)
    srv.httpd.serve_forever()


def run_bench(out: Path, n: int = 1000, concurrencies: tuple[int, ...] = (1, 4, 16)) -> dict[str, Any]:
    """Time the verb at each concurrency; write ``out/bench.json``."""
    import tempfile

    from trustlab.cli import main
    from trustlab.data.factual_qa import load_factual_qa, sample_items

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ri-bench-"))
    items = sample_items(load_factual_qa(), n, seed=0)
    data = work / "bench_questions.jsonl"
    data.write_text("".join(json.dumps({"id": it.id, "question": it.question, "answers": list(it.answers)}) + "\n"
                            for it in items))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(n, q), daemon=True)
    proc.start()
    try:
        url = q.get(timeout=120)
        rows = []
        for c in concurrencies:
            run_dir = work / f"run_c{c}"  # fresh: empty cache
            t0 = time.perf_counter()
            rc = main(["refusal-index", "--base-url", url, "--data", str(data), "--out", str(run_dir),
                       "--concurrency", str(c)])
            wall = time.perf_counter() - t0
            rep = json.loads((run_dir / "report.json").read_text())
            asked = rep["requests"]["answers_asked_now"]
            rows.append({"concurrency": c, "exit_code": rc, "wall_s": wall, "questions": n, "requests": asked,
                         "questions_per_s": n / wall, "requests_per_s": asked / wall})
    finally:
        proc.terminate()
        proc.join(10)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["questions_per_s"]
    for r in rows:
        r["speedup_vs_c1"] = r["questions_per_s"] / base
    res = {"n_questions": n, "rows": rows, "within_60s_at_16": any(r["concurrency"] == 16 and r["wall_s"] <= 60
                                                                   for r in rows),
           "note": "loopback server in a separate process answering at once (toy QA model); 2-core machine "
                   "shared with other jobs, so compare the ratios"}
    atomic_write_json(out / "bench.json", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/refusal-index/bench"))
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    r = run_bench(args.out, args.n)
    for row in r["rows"]:
        print(f"concurrency {row['concurrency']:>2}: {row['wall_s']:.1f} s, {row['questions_per_s']:.1f} questions/s, "
              f"{row['requests_per_s']:.1f} requests/s (x{row['speedup_vs_c1']:.2f})")
