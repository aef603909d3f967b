"""Merge run folders into one markdown report and plot; regenerate README tables from results files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from trustlab.errors import UserError
from trustlab.reporting.record import claims_table, fmt, summary_table
from trustlab.utils.io import atomic_write_text, read_json

START, END = "<!-- results:start -->", "<!-- results:end -->"


def find_results(paths: list[str | Path]) -> list[Path]:
    """Every ``results.json`` under the given files/folders (error if none)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif p.is_dir():  # every trustlab results file below (a tool verb's own results.json is skipped)
            found.extend(f for f in sorted(p.rglob("results.json")) if _is_trustlab_results(f))
        else:
            raise UserError(f"{str(p)!r} is neither a run folder nor a results.json", "pass run folders")
    if not found:
        raise UserError(f"no results.json under {', '.join(map(str, paths))}", "run `trustlab run SYSTEM` first")
    return found


def _is_trustlab_results(path: Path) -> bool:
    try:
        res = read_json(path)
    except (OSError, ValueError, UserError):
        return False
    return isinstance(res, dict) and all(k in res for k in ("schema", "system", "rows", "summary"))


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json and check it has the schema's keys."""
    res = read_json(path)
    missing = [k for k in ("schema", "system", "rows", "summary") if k not in res]
    if missing:
        raise UserError(f"{str(path)!r} is not a trustlab results file (missing {missing})", "pass run folders")
    return res


def _spec(system: str) -> Any:
    from trustlab.registry import SYSTEMS

    try:
        return SYSTEMS.get(system)
    except Exception:  # noqa: BLE001 - a results file of an unknown/broken system still gets a section
        return None


def summary_line(res: dict[str, Any], spec: Any = None) -> dict[str, str]:
    """One line of the merged report's summary table: what ran, headline figure, verdict."""
    spec = spec if spec is not None else _spec(res["system"])
    claims = res.get("claims", [])
    held = sum(bool(c.get("holds")) for c in claims)
    methods = list(dict.fromkeys(s["method"] for s in res["summary"]))
    settings = list(dict.fromkeys(s["setting"] for s in res["summary"]))
    seconds = max(float(res.get("wall_time_s", 0)), float(res.get("extra", {}).get("compute_time_s", 0) or 0))
    ran = (f"{len(methods)} method(s) × {len(settings)} setting(s) × {len(res.get('seeds', []))} seed(s), "
           f"{res.get('scale')} scale, {seconds:.0f} s")
    headline = headline_cell(res, spec.headline[:2]) if spec is not None and spec.headline else "see section"
    verdict = f"claims {held}/{len(claims)} hold" if claims else "no claims at this scale"
    return {"system": res["system"], "ran": ran, "headline": headline, "verdict": verdict}


def key_figure(res: dict[str, Any], run_dir: Path, spec: Any = None) -> Path | None:
    """The run's key figure (the spec's ``key_figure`` under ``plots/``; else its first plot), if it exists."""
    spec = spec if spec is not None else _spec(res["system"])
    names = ([f"plots/{spec.key_figure}"] if spec is not None and spec.key_figure else []) + list(res.get("plots", []))
    for rel in names:
        p = run_dir / rel
        if p.is_file():
            return p
    return None


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")


def merge_report(paths: list[str | Path], out: str | Path, extra: dict[str, list[str]] | None = None,
                 title: str = "trustlab report") -> Path:
    """Write ``out/report.md`` for every run under ``paths``: a table of contents, a one-line-per-system
    summary (what ran, headline figure, verdict), then per system its key figure, tables and claims.

    Args:
        paths: Run folders or results.json files.
        out: Folder of the report.
        extra: Optional lines per system (e.g. the tool verbs the demo ran) shown in its section.
        title: The report's heading.
    """
    out = Path(out)
    files = find_results(paths)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(f, load_results(f)) for f in files]
    heads = [f"{res['system']} ({res.get('scale')})" for _, res in runs]
    lines = [f"# {title}", "", "## Contents", "", "- [Summary](#summary)"]
    lines += [f"- [{h}](#{_anchor(h)})" for h in heads]
    lines += ["", "## Summary", "", "| system | what ran | headline figure | verdict |", "|---|---|---|---|"]
    body: list[str] = []
    for (f, res), head in zip(runs, heads, strict=True):
        spec = _spec(res["system"])
        line = summary_line(res, spec)
        lines.append(f"| [{line['system']}](#{_anchor(head)}) | {line['ran']} | {line['headline']} | {line['verdict']} |")
        body += [f"## {head}", "", f"{line['ran']}; seeds {res.get('seeds')}; source: `{f}`", ""]
        for extra_line in (extra or {}).get(res["system"], []):
            body.append(f"- {extra_line}")
        if (extra or {}).get(res["system"]):
            body.append("")
        fig = key_figure(res, f.parent, spec)
        if fig is not None:
            body += [f"![{res['system']} key figure]({os.path.relpath(fig, out)})", ""]
        body += [summary_table(res["summary"])]
        if res.get("claims"):
            body += ["", claims_table(res["claims"])]
        body.append("")
    atomic_write_text(out / "report.md", "\n".join(lines + [""] + body) + "\n")
    return out / "report.md"


def headline_cell(res: dict[str, Any], headline: list[tuple[str, ...]]) -> str:
    """`method metric = mean ± std` for each headline (method, metric[, setting]) found in a results file."""
    parts = []
    for method, metric, *setting in headline:
        for s in res["summary"]:
            if s["method"] == method and f"{metric}_mean" in s and (not setting or s["setting"] == setting[0]):
                parts.append(f"{method} {metric} {fmt(s[f'{metric}_mean'], s.get(f'{metric}_std'))}"
                             + (f" ({s['setting']})" if len({x['setting'] for x in res['summary']}) > 1 else ""))
                break
    return "; ".join(parts) or "see results"


def replace_block(text: str, block: str) -> str:
    """Replace what stands between the results markers (append the markers if absent)."""
    new = f"{START}\n{block.rstrip()}\n{END}"
    if START in text and END in text:
        return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: new, text, flags=re.S)
    return text.rstrip() + "\n\n" + new + "\n"


def is_stale(res: dict[str, Any], spec: Any) -> bool:
    """Whether a results file was computed with another config than the system's current default scale."""
    from trustlab.config import to_dict

    if res.get("scale") != "default":
        return False
    current = to_dict(spec.config_cls().for_scale("default"))
    ignore = {"seeds", "device"}
    return {k: v for k, v in current.items() if k not in ignore} != \
        {k: v for k, v in res.get("config", {}).items() if k not in ignore}


#: Rows of a system README's generated summary table; the full table stays in the results file.
README_MAX_ROWS = 30


def readme_block(name: str, res: dict[str, Any], spec: Any) -> str:
    """A system README's generated results block: the headline metrics per (setting, method) — at most
    :data:`README_MAX_ROWS` rows, those of the headline settings first — and every claim."""
    metrics = list(dict.fromkeys(h[1] for h in spec.headline)) or None
    summary = res["summary"]
    if metrics:
        summary = [s for s in summary if any(f"{m}_mean" in s for m in metrics)]
    if len(summary) > README_MAX_ROWS:
        wanted = {h[2] for h in spec.headline if len(h) > 2}
        summary = sorted(summary, key=lambda s: s["setting"] not in wanted)[:README_MAX_ROWS]
    shown = len(summary)
    note = (f" Showing {shown} of {len(res['summary'])} (setting, method) rows and the headline metrics; every row and "
            f"metric: `results/{name}/results.json` (`python ../shared/tools/check_results.py results/{name}`)."
            if shown < len(res["summary"]) or metrics else "")
    return (f"Generated by `trustlab report --readme` from `results/{name}/results.json` "
            f"(scale {res.get('scale')}, seeds {res.get('seeds')}, {res.get('wall_time_s', 0):.0f} s, "
            f"git {str(res.get('git'))[:12]}).{note}\n\n" + summary_table(summary, metrics) + "\n"
            + claims_table(res.get("claims", [])))


def update_readmes(results_dir: str | Path = "results", readme: str | Path = "README.md",
                   systems_dir: str | Path = "src/trustlab/systems") -> list[Path]:
    """Regenerate the README systems table and each system README's results block from ``results/<system>/``."""
    from trustlab.registry import SYSTEMS

    results_dir = Path(results_dir)
    written: list[Path] = []
    rows = ["| system | paper | status | latest reproduced figures (default scale, mean ± std over seeds) |",
            "|---|---|---|---|"]
    for name in SYSTEMS.names():
        target = SYSTEMS._targets[name].partition(":")[0].rsplit(".", 1)[-1]
        try:
            spec = SYSTEMS.get(name)
        except (ModuleNotFoundError, AttributeError):
            rows.append(f"| {name} | | not built yet | |")
            continue
        rfile = results_dir / name / "results.json"
        if rfile.is_file():
            res = load_results(rfile)
            held = sum(c["holds"] for c in res.get("claims", []))
            cell = headline_cell(res, spec.headline)
            status = f"{spec.status}; claims {held}/{len(res.get('claims', []))} hold"
            if is_stale(res, spec):
                status += (f"; **stale: computed with an earlier default config** (rerun: `trustlab reproduce {name} "
                           f"--publish`)")
            sys_readme = Path(systems_dir) / target / "README.md"
            if sys_readme.is_file():
                block = readme_block(name, res, spec)
                atomic_write_text(sys_readme, replace_block(sys_readme.read_text(), block))
                written.append(sys_readme)
        else:
            cell, status = "no results yet", spec.status
        rows.append(f"| [{name}](src/trustlab/systems/{target}/README.md) | {spec.paper} | {status} | {cell} |")
    readme = Path(readme)
    text = readme.read_text() if readme.is_file() else ""
    atomic_write_text(readme, replace_block(text, "\n".join(rows)))
    written.append(readme)
    return written
