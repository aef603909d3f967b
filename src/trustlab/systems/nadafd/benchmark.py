"""Scale benchmark: wall time per round of one federation at several client counts, per engine.

``python -m trustlab.systems.nadafd.benchmark --out results/nadafd/scale`` runs FedAvg (the engine's
cost, not a defense's) with ``fraction_fit`` 0.2 for 2 rounds at 10, 100 and 1,000 clients on the
``inprocess`` loop and Flower's Simulation Engine, and writes ``benchmark.json`` (per run: total wall
time, per-round seconds, clients sampled per round). Round 1 of ``flower-sim`` includes Ray's start-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from trustlab.utils.io import atomic_write_json


def run_benchmark(out: str | Path, sizes: tuple[int, ...] = (10, 100, 1000),
                  engines: tuple[str, ...] = ("inprocess", "flower-sim"), rounds: int = 2,
                  fraction_fit: float = 0.2, method: str = "fedavg") -> list[dict[str, Any]]:
    """Run every (engine, size) once and write ``out/benchmark.json`` after each (resumable by hand)."""
    from trustlab.systems.nadafd.fed import fed_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if (out / "benchmark.json").is_file():  # resume: keep finished (engine, size) rows
        import json

        rows = json.loads((out / "benchmark.json").read_text())["rows"]
    done = {(r["engine"], r["num_clients"]) for r in rows}
    for n in sizes:
        for engine in engines:
            if (engine, n) in done:
                continue
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                # Dir(0.5) cannot give each of 1,000 clients >= 10 chips: near-IID split there (timing only)
                ov = {"alpha": 100.0} if n >= 1000 else {}
                res = fed_run(tmp, engine=engine, num_clients=n, fraction_fit=fraction_fit, rounds=rounds,
                              method=method, attack="speckle", seed=0, overrides=ov)
            rows.append({"engine": engine, "num_clients": n, "fraction_fit": fraction_fit, "rounds": rounds,
                         "method": method, "overrides": ov, "wall_seconds": time.perf_counter() - t0,
                         "round_seconds": [r["seconds"] for r in res["rounds_log"][1:]],
                         "sampled_per_round": [len(r["selected"]) for r in res["rounds_log"][1:]],
                         "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]})
            atomic_write_json(out / "benchmark.json", {"rows": rows})
    return rows


if __name__ == "__main__":  # pragma: no cover - CLI entry
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/nadafd/scale")
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--engines", default="inprocess,flower-sim")
    a = p.parse_args()
    run_benchmark(a.out, tuple(int(s) for s in a.sizes.split(",")), tuple(a.engines.split(",")))
