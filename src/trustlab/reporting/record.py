"""The record every run writes: ``results.json`` (schema 1), ``metrics.csv``, ``series.csv``, plots, ``report.md``.

Schema (see DESIGN.md): ``schema``, ``system``, ``scale``, ``config``, ``seeds``, ``env``, ``git``,
``wall_time_s``, ``rows`` (one dict per measured (setting, method, seed), never averaged),
``summary`` (per (setting, method): ``n``, ``<metric>_mean``, ``<metric>_std``, computed from rows) and
``claims`` (``id``, ``text``, ``holds``, ``figures``; computed by code from ``summary``).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustlab.utils.io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
KEYS = ("setting", "method", "seed")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) std of every numeric metric per (setting, method), in first-seen order.

    Example:
        >>> s = summarize([{"setting": "a", "method": "m", "seed": 0, "acc": 0.5},
        ...                {"setting": "a", "method": "m", "seed": 1, "acc": 0.7}])
        >>> round(s[0]["acc_mean"], 3), s[0]["n"]
        (0.6, 2)
    """
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple[str, str], set[int]] = defaultdict(set)
    for r in rows:
        key = (r["setting"], r["method"])
        seeds[key].add(r["seed"])
        for k, v in r.items():
            if k not in KEYS and _is_num(v) and math.isfinite(float(v)):
                cells[key][k].append(float(v))
    out = []
    for key in dict.fromkeys((r["setting"], r["method"]) for r in rows):
        d: dict[str, Any] = {"setting": key[0], "method": key[1], "n": len(seeds[key])}
        for k, vals in cells[key].items():
            d[f"{k}_mean"] = statistics.fmean(vals)
            d[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(d)
    return out


@dataclass
class RunRecord:
    """What a system's ``experiment.run`` returns; the CLI writes it with :meth:`write`.

    Args:
        system: Registry name.
        scale: ``smoke``, ``quick``, ``default`` or ``paper``.
        config: The resolved config as plain data.
        seeds: Seeds run.
    """

    system: str
    scale: str
    config: dict[str, Any]
    seeds: list[int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    git: str | None = None
    wall_time_s: float = 0.0
    started_at: float = field(default_factory=time.time)

    # -- building ---------------------------------------------------------------------------------
    def add_row(self, setting: str, method: str, seed: int, **metrics: Any) -> dict[str, Any]:
        """Record the figures of one (setting, method, seed)."""
        row = {"setting": str(setting), "method": str(method), "seed": int(seed)}
        for k, v in metrics.items():
            row[k] = float(v) if _is_num(v) else v
        self.rows.append(row)
        return row

    def add_series(self, setting: str, method: str, seed: int, step: int, **metrics: Any) -> None:
        """Record one point of a per-round/per-epoch curve (goes to ``series.csv`` and plots)."""
        self.series.append({"setting": str(setting), "method": str(method), "seed": int(seed), "step": int(step),
                            **{k: float(v) for k, v in metrics.items()}})

    @property
    def summary(self) -> list[dict[str, Any]]:
        """Per (setting, method) mean/std, computed from ``rows``."""
        return summarize(self.rows)

    def mean(self, method: str, metric: str, setting: str | None = None) -> float:
        """Mean of ``metric`` for ``method`` (in ``setting``, or the only setting that has it)."""
        hits = [s for s in self.summary if s["method"] == method and (setting is None or s["setting"] == setting)]
        if not hits or f"{metric}_mean" not in hits[0]:
            raise KeyError(f"no {metric} for method {method!r} in setting {setting!r}")
        if len(hits) > 1:
            raise KeyError(f"method {method!r} has several settings; pass setting=")
        return float(hits[0][f"{metric}_mean"])

    def std(self, method: str, metric: str, setting: str | None = None) -> float:
        """Std of ``metric`` for ``method`` (see :meth:`mean`)."""
        hits = [s for s in self.summary if s["method"] == method and (setting is None or s["setting"] == setting)]
        return float(hits[0][f"{metric}_std"])

    def add_claim(self, claim_id: str, text: str, holds: bool, **figures: Any) -> dict[str, Any]:
        """Record a claim of the system's issue, evaluated by code from ``summary``."""
        c = {"id": claim_id, "text": text, "holds": bool(holds), "figures": figures}
        self.claims.append(c)
        return c

    # -- writing ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content."""
        return {
            "schema": SCHEMA_VERSION,
            "system": self.system,
            "scale": self.scale,
            "config": self.config,
            "seeds": list(self.seeds),
            "env": self.env,
            "git": self.git,
            "wall_time_s": self.wall_time_s,
            "rows": self.rows,
            "summary": self.summary,
            "claims": self.claims,
            "notes": self.notes,
            "plots": self.plots,
            "extra": self.extra,
        }

    def write(self, out: str | Path, make_plots: bool = True) -> Path:
        """Write results.json, metrics.csv, series.csv, config.yaml, plots/ and report.md to ``out``."""
        from trustlab.reporting.plots import plot_series, plot_summary

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if make_plots:
            for p in plot_summary(self.summary, out / "plots" / "summary.png", title=self.system,
                                  metrics=headline_metrics(self.system)):
                rel = str(p.relative_to(out))
                if rel not in self.plots:
                    self.plots.append(rel)
            for p in plot_series(self.series, out / "plots", title=self.system,
                                 x_label=str(self.extra.get("series_x", "step"))):
                rel = str(p.relative_to(out))
                if rel not in self.plots:
                    self.plots.append(rel)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        atomic_write_text(out / "metrics.csv", to_csv(self.rows))
        if self.series:
            atomic_write_text(out / "series.csv", to_csv(self.series))
        atomic_write_text(out / "report.md", render_report(self.to_dict()))
        atomic_write_json(out / "results.json", self.to_dict())
        return out / "results.json"


def headline_metrics(system: str) -> list[str]:
    """The metrics of a system's headline figures (its spec), shown first in its summary plot."""
    try:
        from trustlab.registry import SYSTEMS

        return list(dict.fromkeys(h[1] for h in SYSTEMS.get(system).headline))
    except Exception:  # noqa: BLE001 - an unregistered system (tests' toy systems) has none
        return []


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows -> CSV text (union of keys, first-seen order)."""
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    return buf.getvalue()


def fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """``0.812 ± 0.013``."""
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "n/a"
    s = f"{mean:.{digits}g}" if abs(mean) >= 1000 else f"{mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        s += f" ± {std:.{digits}f}"
    return s


def summary_table(summary: list[dict[str, Any]], metrics: list[str] | None = None, digits: int = 3) -> str:
    """Markdown table of a summary: setting | method | n | metric (mean ± std)..."""
    if not summary:
        return "(no rows)\n"
    if metrics is None:
        metrics = list(dict.fromkeys(k[: -len("_mean")] for s in summary for k in s if k.endswith("_mean")))
    head = "| setting | method | n | " + " | ".join(metrics) + " |\n"
    head += "|---|---|---|" + "---|" * len(metrics) + "\n"
    body = ""
    for s in summary:
        cells = [fmt(s.get(f"{m}_mean"), s.get(f"{m}_std"), digits) if f"{m}_mean" in s else "" for m in metrics]
        body += f"| {s['setting']} | {s['method']} | {s['n']} | " + " | ".join(cells) + " |\n"
    return head + body


def claims_table(claims: list[dict[str, Any]]) -> str:
    """Markdown list of claims with their verdicts and figures."""
    if not claims:
        return ""
    out = "| claim | holds | figures |\n|---|---|---|\n"
    for c in claims:
        figs = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (c.get("figures") or {}).items()
        )
        out += f"| {c['id']}: {c['text']} | {'yes' if c['holds'] else '**no**'} | {figs} |\n"
    return out


def render_report(res: dict[str, Any]) -> str:
    """The per-run ``report.md``."""
    lines = [
        f"# {res['system']} ({res['scale']} scale)",
        "",
        f"seeds: {res['seeds']} · wall time: {res['wall_time_s']:.1f} s · git: {res.get('git') or 'n/a'} · "
        f"device: {res.get('env', {}).get('device', '?')}",
        "",
        "## Results (mean ± std over seeds)",
        "",
        summary_table(res["summary"]),
    ]
    if res.get("claims"):
        lines += ["## Claims", "", claims_table(res["claims"])]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    if res.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in res["plots"]] + [""]
    return "\n".join(lines)
