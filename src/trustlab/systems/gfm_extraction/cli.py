"""``trustlab extract``: extract a victim GFM's graph encoder on your own graph, within a query budget.

The victim is an HTTP embedding endpoint (``--victim-url``, protocol in ``service.py``) or a Python
factory (``--victim MODULE:FACTORY`` returning a GFM, a VictimService or any object with
``embed(x, edge_index, nodes)`` and ``embed_text(text_emb)``). The graph is a folder with
``nodes.jsonl`` (``{"text", "label"}`` per line), ``edges.csv`` (``src,dst``) and ``classes.json``
(``{label: description}``). Writes ``surrogate.safetensors`` + ``surrogate.json`` (reload with
``trustlab.systems.gfm_extraction.tool.load_surrogate``) and ``report.json`` (fidelity and cosine to
the victim, and their gains over the text prior, on held-out nodes).

Examples:
    trustlab extract --victim embedded --graph embedded --budget 0.2 --out stolen/   # the embedded demo
    trustlab extract --victim-url http://127.0.0.1:8000 --graph my_graph/ --budget 40 --out stolen/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustlab.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def extract(
    graph: Annotated[Path, typer.Option("--graph", help="Graph folder (nodes.jsonl, edges.csv, classes.json) or 'embedded'.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    victim_url: Annotated[str | None, typer.Option("--victim-url", help="Victim embedding endpoint URL.")] = None,
    victim: Annotated[str | None, typer.Option("--victim", help="MODULE:FACTORY returning the victim, or 'embedded'.")] = None,
    budget: Annotated[float, typer.Option("--budget", help="Training queries: fraction of nodes (<= 1) or count.")] = 0.1,
    eval_frac: Annotated[float, typer.Option("--eval", help="Extra queries (fraction of nodes) to measure fidelity.")] = 0.1,
    arch: Annotated[str, typer.Option("--arch", help="Surrogate: sage | gcn | gat | meanmlp | mlp.")] = "sage",
    hidden: Annotated[int, typer.Option("--hidden", help="Surrogate width.")] = 256,
    epochs: Annotated[int, typer.Option("--epochs", help="Surrogate training epochs.")] = 60,
    lr: Annotated[float, typer.Option("--lr", help="Surrogate learning rate.")] = 5e-3,
    residual: Annotated[bool, typer.Option("--residual/--plain", help="Residual surrogate (starts at the text prior).")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Nodes per victim request.")] = 50,
    hops: Annotated[int | None, typer.Option("--hops", help="HTTP: send only the K-hop neighbourhood of each batch.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of node sampling and surrogate init.")] = 0,
    text_model: Annotated[str | None, typer.Option("--text-model", help="Local sentence-encoder folder.")] = None,
) -> None:
    """Extract a victim GFM's graph encoder by embedding regression on your graph."""
    from trustlab.runner import ensure_writable
    from trustlab.systems.gfm_extraction.tool import extract as run_extract
    from trustlab.systems.gfm_extraction.tool import load_factory

    if (victim_url is None) == (victim is None):
        raise UserError("give exactly one of --victim-url URL or --victim MODULE:FACTORY", "pick one victim")
    if str(graph) == "embedded":
        from trustlab.systems.gfm_extraction.demo import DEMO_GRAPH

        graph = DEMO_GRAPH
    if victim == "embedded":
        victim = "trustlab.systems.gfm_extraction.demo:victim"
    if not graph.is_dir():
        raise UserError(f"--graph {str(graph)!r} is not a folder", "pass a folder with nodes.jsonl, edges.csv, classes.json")
    if victim_url is not None:
        from trustlab.systems.gfm_extraction.service import HTTPVictim

        v = HTTPVictim(victim_url, hops=hops)
    else:
        v = load_factory(victim)
    ensure_writable(out)
    rep = run_extract(v, graph, budget=budget, out=out, arch=arch, hidden=hidden, epochs=epochs, lr=lr,
                      residual=residual, eval_frac=eval_frac, batch=batch, seed=seed, text_model=text_model)
    line = f"{rep['graph']}: {rep['train_queries']} training + {rep['eval_queries']} evaluation queries"
    if "eval" in rep:
        e = rep["eval"]
        line += (f"; fidelity {e['fidelity']:.3f} (text prior {e['fid_text']:.3f}, gain {e['fid_gain']:+.3f} "
                 f"[{e['fid_gain_lo']:+.3f}, {e['fid_gain_hi']:+.3f}]); cosine {e['cos']:.3f} "
                 f"(text prior {e['cos_text']:.3f})")
    typer.echo(line)
    typer.echo(f"surrogate -> {out / 'surrogate.safetensors'}; report -> {out / 'report.json'}")
