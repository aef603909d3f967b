"""Build ``factual_qa.jsonl`` (the embedded factual QA set of the Refusal Index system) from package data.

This script is run **once, by a maintainer**, never at run time: the packages it reads are not
trustlab dependencies. Install them anywhere outside the project environment and point the script
at them, e.g.::

    pip install --no-deps --target /tmp/qa_pkgs countryinfo==1.0.1 mendeleev==1.3.0 us==4.0.0
    python -m trustlab.data.factual_qa_build --packages /tmp/qa_pkgs --out src/trustlab/data/factual_qa.jsonl

Sources (see ``factual_qa_ATTRIBUTION.md``):

* ``countryinfo`` 1.0.1 (MIT): country capitals and international calling codes.
* ``mendeleev`` 1.3.0 (MIT): ``elements.db`` (SQLite, read directly) for chemical symbols, atomic
  numbers, discovery years and discoverers.
* ``us`` 4.0.0 (BSD-3): U.S. state capitals and statehood years.

Every record is ``{"id", "question", "answers", "category", "source"}``; ``answers[0]`` is the
canonical gold answer and the rest are aliases (ASCII-folded spellings, bare numbers, surnames).
The output is deterministic (sorted, no randomness).
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import types
import unicodedata
from pathlib import Path
from typing import Any


def _fold(text: str) -> str:
    """ASCII-fold accents (``Bogotá`` -> ``Bogota``)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _aliases(*names: str) -> list[str]:
    out: list[str] = []
    for n in names:
        for v in (n.strip(), _fold(n.strip())):
            if v and v not in out:
                out.append(v)
    return out


def _countries(root: Path) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    files = sorted((root / "countryinfo" / "data").glob("*.json"))
    if not files:
        raise SystemExit(f"no countryinfo data under {root}")
    seen: set[str] = set()
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        name = (d.get("name") or "").strip()
        if not name or name in seen:
            continue
        seen.add(name)
        slug = re.sub(r"[^a-z0-9]+", "_", _fold(name).lower()).strip("_")
        capital = d.get("capital") or ""
        if isinstance(capital, list):  # one file stores ["Vatican City"]
            capital = capital[0] if len(capital) == 1 else ""
        capital = capital.strip()
        if capital:
            recs.append({"id": f"country_capital/{slug}", "question": f"What is the capital city of {name}?",
                         "answers": _aliases(capital), "category": "country_capital", "source": "countryinfo"})
        codes = [c.strip() for c in d.get("callingCodes") or [] if c and c.strip().isdigit()]
        if len(codes) == 1:  # skip countries sharing ambiguous multi-code plans
            recs.append({"id": f"country_calling_code/{slug}",
                         "question": f"What is the international telephone calling code of {name}?",
                         "answers": [f"+{codes[0]}", codes[0]], "category": "country_calling_code",
                         "source": "countryinfo"})
    return recs


def _surnames(discoverers: str) -> list[str]:
    """``"Sir H. Davy, J.L. Gay-Lussac"`` -> ``["Sir H. Davy, J.L. Gay-Lussac", "Davy", "Gay-Lussac"]``."""
    out = [discoverers.strip()]
    if re.search(r"Institute|Laborator|Research|Universit|Centre|Center", discoverers):
        # an institution, not people: keep the full name, acronyms in parentheses and "Berkeley"
        out += re.findall(r"\(([A-Z]{2,})\)", discoverers)
        out += ["Berkeley"] if "Berkeley" in discoverers else []
        return _aliases(*out)
    for part in re.split(r",| and |&|;", discoverers):
        words = [w for w in re.split(r"\s+", part.strip()) if w]
        if words:
            last = words[-1].strip(".")
            last = last.split(".")[-1] if "." in last else last
            if len(last) >= 3 and last not in out:
                out.append(last)
    return _aliases(*out)


def _elements(root: Path) -> list[dict[str, Any]]:
    db = root / "mendeleev" / "elements.db"
    if not db.is_file():
        raise SystemExit(f"no mendeleev elements.db under {root}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "select atomic_number, name, symbol, discoverers, discovery_year from elements order by atomic_number"
    ).fetchall()
    con.close()
    recs: list[dict[str, Any]] = []
    for z, name, symbol, disc, year in rows:
        slug = name.lower()
        recs.append({"id": f"element_symbol/{slug}", "question": f"What is the chemical symbol of {name}?",
                     "answers": [symbol], "category": "element_symbol", "source": "mendeleev"})
        recs.append({"id": f"element_atomic_number/{slug}", "question": f"What is the atomic number of {name}?",
                     "answers": [str(z)], "category": "element_atomic_number", "source": "mendeleev"})
        if year and isinstance(year, int) and year > 0:
            recs.append({"id": f"element_discovery_year/{slug}", "question": f"In what year was {name} discovered?",
                         "answers": [str(year)], "category": "element_discovery_year", "source": "mendeleev"})
        if disc and "ancient" not in disc.lower() and "unknown" not in disc.lower():
            recs.append({"id": f"element_discoverer/{slug}", "question": f"Who discovered the element {name}?",
                         "answers": _surnames(disc), "category": "element_discoverer", "source": "mendeleev"})
    return recs


def _states(root: Path) -> list[dict[str, Any]]:
    sys.path.insert(0, str(root))
    sys.modules.setdefault("jellyfish", types.ModuleType("jellyfish"))  # only used for fuzzy lookup
    try:
        import us.states as us_states  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(root))
    recs: list[dict[str, Any]] = []
    for st in sorted(us_states.STATES, key=lambda s: s.name):
        slug = re.sub(r"[^a-z0-9]+", "_", st.name.lower()).strip("_")
        if st.capital:
            recs.append({"id": f"state_capital/{slug}", "question": f"What is the capital of the U.S. state of {st.name}?",
                         "answers": _aliases(st.capital), "category": "state_capital", "source": "us"})
        if st.statehood_year:
            recs.append({"id": f"state_statehood_year/{slug}",
                         "question": f"In what year did {st.name} become a U.S. state?",
                         "answers": [str(st.statehood_year)], "category": "state_statehood_year", "source": "us"})
    return recs


def build(root: Path) -> list[dict[str, Any]]:
    """All records from the three packages installed under ``root`` (a ``pip --target`` folder)."""
    recs = _countries(root) + _elements(root) + _states(root)
    ids = [r["id"] for r in recs]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate ids")
    return recs


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (maintainers only)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=Path, required=True, help="folder holding countryinfo/, mendeleev/, us/")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("factual_qa.jsonl"))
    a = ap.parse_args(argv)
    recs = build(a.packages)
    a.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    cats: dict[str, int] = {}
    for r in recs:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    print(f"wrote {len(recs)} records to {a.out}: {cats}")


if __name__ == "__main__":
    main()
