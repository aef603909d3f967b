"""``trustlab survival fit|predict``: fit ICFNet on your cohort's files, save it, predict for new patients.

``fit`` reads a clinical CSV (one row per patient: id, time, event, clinical columns), an optional
genomics CSV (id + gene columns) and an optional folder of per-patient patch-feature files
(``<id>.safetensors|.npy|.h5``); patients without genomics or a slide are kept (missing modality).
It cross-validates the settings (stratified k-fold, C-index with a 95 % t-interval over folds), then
fits on every patient and writes ``DIR/model.safetensors`` + ``DIR/model.json`` (reload with
``ICFNet.load(DIR)``), ``DIR/cohort.json`` (the column names) and ``DIR/fit_report.json``.

``predict`` reloads the model and writes one row per patient: the id, ``risk`` (higher = earlier
event) and ``S(t=<edge>)``, the survival probability at each training time-bin edge.

Examples:
    trustlab survival fit --clinical clinical.csv --genomics rna.csv --patches feats/ \\
        --time months --event dead --id patient --out model/
    trustlab survival predict --model model/ --clinical new.csv --genomics new_rna.csv --out pred.csv
"""

from __future__ import annotations

import math
import time as _time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Fit / predict a multimodal survival model (ICFNet).")

COHORT_FORMAT = "trustlab.icfnet.cohort/1"

#: ``--clinical embedded`` / ``--genomics embedded``: a shipped 120-patient synthetic cohort
#: (``make_synthetic_multimodal(n=120, seed=7, gene_groups=4, genes_per_group=4)``: clinical CSV with
#: columns patient_id, time, event, age, sex, treatment; 16-gene genomics CSV, 12 patients without it).
ASSETS = Path(__file__).parent / "assets"
EMBEDDED = {"clinical": ASSETS / "demo_clinical.csv", "genomics": ASSETS / "demo_genomics.csv"}


def _asset(path: Path | None, what: str) -> Path | None:
    return EMBEDDED[what] if path is not None and str(path) == "embedded" else path


def fold_interval(scores: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the fold C-indices and its two-sided t-interval (``mean +- t_{k-1} sd / sqrt(k)``)."""
    from scipy import stats

    x = np.asarray(scores, float)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def cross_validate(model: Any, frame: Any, y: np.ndarray, folds: int, seed: int) -> list[float]:
    """Stratified (by event) k-fold C-indices of clones of ``model``."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    event = y["event"]
    if event.sum() < folds:
        raise UserError(f"{int(event.sum())} events and {int((~event).sum())} censored patients are too few "
                        f"for {folds}-fold cross-validation", "pass a smaller --folds (>= 2) or --folds 0 to skip it")
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = []
    for k, (tr, te) in enumerate(skf.split(np.zeros(len(y)), event)):
        m = clone(model).set_params(random_state=seed * 100 + k)
        scores.append(m.fit(frame.iloc[tr], y[tr]).score(frame.iloc[te], y[te]))
        log.info("fold %d/%d: C-index %.3f", k + 1, folds, scores[-1])
    return scores


def model_settings(**overrides: Any) -> dict[str, Any]:
    """ICFNet arguments of the experiment's default model (:class:`Config`: the official architecture at
    d = 16 with the training settings chosen on development data), with the non-None ``overrides``."""
    from trustlab.systems.icfnet.config import Config

    cfg = Config()
    kw = dict(n_bins=cfg.n_bins, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
              weight_decay=cfg.weight_decay, balanced_sampler=cfg.balanced_sampler, d=cfg.icf_d or cfg.d,
              heads=cfg.heads, layers=cfg.layers, fusion_layers=cfg.fusion_layers, dropout=cfg.dropout,
              ot_iters=cfg.ot_iters, ot_tol=cfg.ot_tol, tokens=cfg.tokens, token_dropout=cfg.token_dropout)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return kw


@app.command("fit")
def fit_cmd(
    clinical: Annotated[Path, typer.Option("--clinical", help="Clinical CSV: id, time, event and clinical columns "
                                                              "('embedded' = the shipped demo cohort).")],
    time: Annotated[str, typer.Option("--time", help="Time column (> 0).")],
    event: Annotated[str, typer.Option("--event", help="Event column (1 = event, 0 = censored).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder (created).")],
    genomics: Annotated[Path | None, typer.Option("--genomics", help="Genomics CSV: id + numeric gene columns.")] = None,
    patches: Annotated[Path | None, typer.Option("--patches", help="Folder of <id>.safetensors|.npy|.h5 patch features.")] = None,
    id_col: Annotated[str, typer.Option("--id", help="Patient id column (in every CSV).")] = "patient_id",
    max_patches: Annotated[int, typer.Option("--max-patches", help="Cap on patches per slide (larger bags are "
                                                                   "subsampled, seeded per patient).")] = 256,
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds for the C-index (0 = skip).")] = 5,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the experiment's, 20).")] = None,
    d: Annotated[int | None, typer.Option("--d", help="Hidden width (default: the experiment's, 16; paper 256).")] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Transformer layers per stream (default 2, as in "
                                                                 "the paper).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default: the experiment's, 5e-3).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation, sampling and folds.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "cpu",
) -> None:
    """Fit ICFNet on a cohort, report its cross-validated C-index and save it."""
    from sksurv.util import Surv

    from trustlab.data.survival import load_survival_frame
    from trustlab.runner import ensure_writable
    from trustlab.systems.icfnet.method import ICFNet
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_json

    if max_patches < 1:
        raise UserError(f"--max-patches {max_patches} must be >= 1", "use e.g. --max-patches 256")
    if folds == 1 or folds < 0:
        raise UserError(f"--folds {folds} is not a number of folds", "use --folds 5 (or 0 to skip cross-validation)")
    kw = model_settings(epochs=epochs, d=d, layers=layers, lr=lr)
    if kw["epochs"] < 1 or kw["d"] < 2 or kw["layers"] < 0 or kw["lr"] <= 0:
        raise UserError("--epochs, --d, --lr must be positive and --layers >= 0", "e.g. --epochs 20 --d 16 --lr 5e-3")
    if kw["d"] % kw["heads"]:
        kw["heads"] = 1
    clinical, genomics = _asset(clinical, "clinical"), _asset(genomics, "genomics")
    frame, t, e, info = load_survival_frame(clinical, id_col, time, event, genomics, patches)
    if not e.any():
        raise UserError(f"no patient in {str(clinical)!r} has an event ({event}=1)",
                        "a survival model needs observed events; check --event")
    ensure_writable(out)
    y = Surv.from_arrays(e, t)
    dev = str(resolve_device(device))
    model = ICFNet(**kw, max_patches=max_patches, random_state=seed, device=dev)
    t0 = _time.perf_counter()
    cv: dict[str, Any] = {"folds": folds}
    if folds:
        scores = cross_validate(model, frame, y, folds, seed)
        mean, lo, hi = fold_interval(scores)
        cv.update(c_index=mean, ci95=[lo, hi], fold_c_index=scores, interval="t-interval over folds (95 %)")
    model.fit(frame, y)
    model.save(out)
    ds = model._dataset(frame, y)
    modalities = {m: {"kind": mod.kind, "patients": int(mod.present.sum()),
                      **({"features": mod.dim, "tokens": len(mod.groups)} if mod.kind == "tabular" else
                         {"dim": mod.dim, "max_patches": max_patches, "truncated_bags": mod.info.get("truncated_bags", 0),
                          "largest_bag": info.get("largest_bag")})}
                  for m, mod in ds.modalities.items()}
    report = {"patients": len(ds), "events": int(e.sum()), "modalities": modalities, "cross_validation": cv,
              "time_bins": [float(c) for c in model.cuts_], "params": model.get_params(),
              "seconds": _time.perf_counter() - t0}
    atomic_write_json(out / "cohort.json", {"format": COHORT_FORMAT, "id": id_col, "time": time, "event": event,
                                            "genomics": genomics is not None, "patches": patches is not None})
    atomic_write_json(out / "fit_report.json", report)
    mods = ", ".join(f"{m} {v['patients']}/{len(ds)}" for m, v in modalities.items())
    typer.echo(f"{len(ds)} patients, {int(e.sum())} events; modalities (patients with it): {mods}")
    if "pathology" in modalities:
        p = modalities["pathology"]
        typer.echo(f"patch cap --max-patches {max_patches}: {p['truncated_bags']} slide(s) subsampled "
                   f"(largest bag {p['largest_bag']} patches)")
    if folds:
        typer.echo(f"cross-validated C-index ({folds} folds): {cv['c_index']:.3f} "
                   f"(95 % CI {cv['ci95'][0]:.3f}-{cv['ci95'][1]:.3f})")
    typer.echo(f"model: {out}  (report: {out / 'fit_report.json'})")


@app.command("predict")
def predict_cmd(
    model_dir: Annotated[Path, typer.Option("--model", help="Folder written by `trustlab survival fit`.")],
    clinical: Annotated[Path, typer.Option("--clinical", help="Clinical CSV of the patients (same columns as at fit).")],
    out: Annotated[Path, typer.Option("--out", help="Prediction CSV to write.")],
    genomics: Annotated[Path | None, typer.Option("--genomics", help="Genomics CSV (absent = every patient lacks it).")] = None,
    patches: Annotated[Path | None, typer.Option("--patches", help="Patch-feature folder (absent = no slides).")] = None,
    id_col: Annotated[str | None, typer.Option("--id", help="Patient id column (default: the one used at fit).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "cpu",
) -> None:
    """Predict risk and survival probabilities for new patients with a saved model."""
    import pandas as pd

    from trustlab.data.survival import load_survival_frame
    from trustlab.systems.icfnet.method import ICFNet
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import atomic_write_text, read_json

    meta_path = model_dir / "cohort.json"
    if not meta_path.is_file():
        raise UserError(f"{str(model_dir)!r} holds no cohort.json", "pass the --out folder of `trustlab survival fit`")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != COHORT_FORMAT:
        raise UserError(f"{str(meta_path)!r} is not a trustlab survival model", "re-run `trustlab survival fit`")
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {str(out)!r} is not a .csv file", "pass e.g. --out predictions.csv")
    model = ICFNet.load(model_dir, device=str(resolve_device(device)))
    clinical, genomics = _asset(clinical, "clinical"), _asset(genomics, "genomics")
    id_col = id_col or meta["id"]
    frame, _, _, info = load_survival_frame(clinical, id_col, None, None, genomics, patches,
                                            drop=(meta["time"], meta["event"]))
    for flag, used, given in (("--genomics", meta["genomics"], genomics), ("--patches", meta["patches"], patches)):
        if used and given is None:
            log.warning("the model was fitted with %s; without it every patient is treated as lacking that modality",
                        flag)
    fitted = model.layout_
    for m, entry in fitted["tabular"].items():  # a modality left out at prediction: all patients lack it
        for c in entry["columns"]:
            if c not in frame.columns and m != "clinical":
                frame[c] = np.nan
    for entry in fitted["bags"].values():
        if entry["column"] not in frame.columns:
            frame[entry["column"]] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    risk = model.predict(frame)
    surv = model.predict_survival_function(frame, return_array=True)
    table = pd.DataFrame({id_col: frame.index.astype(str), "risk": risk})
    for j, t in enumerate(model.unique_times_):
        table[f"S(t={t:.6g})"] = surv[:, j]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False))
    typer.echo(f"{len(table)} patients -> {out} (risk + survival at {len(model.unique_times_)} time-bin edges)")
