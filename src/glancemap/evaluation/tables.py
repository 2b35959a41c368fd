"""Tables from a results file: means with standard errors, medians of the cost columns, and paired
differences against a reference method."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..methods import method_label

SUMMARY_COLUMNS = (
    "AD@100",
    "IC@100",
    "AD@50",
    "IC@50",
    "AD@15",
    "IC@15",
    "ROAD MoRF",
    "ROAD LeRF",
    "ROAD LeRF-MoRF",
    "deletion",
    "insertion",
    "mass share",
    "top-area share",
    "pointing hit",
)
COST_COLUMNS = ("sec/map", "backbone forward/map", "backbone backward/map", "auxiliary forward/map")
BETTER = {"AD@100": "lower", "AD@50": "lower", "AD@15": "lower", "ROAD MoRF": "lower", "deletion": "lower"}


def result_records(results: Path, text: str | None = None) -> list[dict]:
    """The records of a results JSONL (``text``: its content, if already read), refusing a line that
    is not one with a message naming the file and the line."""
    text = Path(results).read_text() if text is None else text
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{results} line {number} is not JSON ({exc}); delete that line or the folder") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("method"), str) or not isinstance(rec.get("file"), str):
            raise ValueError(
                f"{results} line {number} is not a result record (no method and file); delete that line or the folder"
            )
        records.append(rec)
    return records


def read_results(results: Path) -> dict[str, dict[str, dict]]:
    """``{method: {file: record}}`` from a results JSONL, methods in first-seen order."""
    per_method: dict[str, dict[str, dict]] = {}
    for rec in result_records(results):
        per_method.setdefault(rec["method"], {})[rec["file"]] = rec
    return per_method


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def summarize(results: Path) -> list[dict]:
    """Mean and standard error (std/sqrt(n)) per method and metric, in first-seen method order;
    cost columns (seconds and passes per map) are medians over the images."""
    rows = []
    for name, by_file in read_results(results).items():
        recs = list(by_file.values())
        row = {"method": name, "n": len(recs)}
        for col in SUMMARY_COLUMNS + COST_COLUMNS:
            vals = [r[col] for r in recs if col in r]
            if not vals:
                continue
            if col in COST_COLUMNS:  # per batch, so the median: robust to a batch slowed by a busy machine
                row[col] = statistics.median(vals)
                continue
            row[col], row[f"{col} se"] = mean_and_se(vals)
        rows.append(row)
    return rows


def _fmt(col: str, v: float) -> str:
    if col.startswith(("ROAD", "deletion", "insertion", "mass", "top-area", "pointing")):
        return f"{v:.3f}"
    if col == "sec/map":
        return f"{v:.3g}"
    if col.endswith("/map"):
        return f"{v:g}"
    return f"{v:.2f}"


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``table.md`` (mean ± s.e.) and ``table.csv`` (separate mean and s.e. columns) in ``out``."""
    cols = [c for c in SUMMARY_COLUMNS + COST_COLUMNS if any(c in r for r in rows)]
    md = out / "table.md"
    head = ["method", "n"] + [
        f"{c} {'↓' if BETTER.get(c) == 'lower' else '↑'}" if c in SUMMARY_COLUMNS else c for c in cols
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [method_label(r["method"]), str(r["n"])]
        for c in cols:
            if c not in r:
                cells.append("–")
            elif f"{c} se" in r:
                cells.append(f"{_fmt(c, r[c])} ± {_fmt(c, r[c + ' se'])}")
            else:
                cells.append(_fmt(c, r[c]))
        lines.append("| " + " | ".join(cells) + " |")
    md.write_text("\n".join(lines) + "\n")
    path_csv = out / "table.csv"
    fields = ["method", "n"] + [x for c in cols for x in ((c, f"{c} se") if c in SUMMARY_COLUMNS else (c,))]
    with open(path_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return md, path_csv


def paired_differences(results: Path, reference: str, columns: Sequence[str] = SUMMARY_COLUMNS) -> list[dict]:
    """``reference`` minus each other method on the images both scored: mean and standard error of
    the per-image difference (paired, so far tighter than comparing two means)."""
    per_method = read_results(results)
    if reference not in per_method:
        raise ValueError(f"no results for {reference!r} in {results}")
    ref = per_method[reference]
    rows = []
    for name, recs in per_method.items():
        common = sorted(set(ref) & set(recs))
        if name == reference or not common:
            continue
        row = {"method": name, "n": len(common)}
        for col in columns:
            d = [ref[f][col] - recs[f][col] for f in common if col in ref[f] and col in recs[f]]
            if d:
                row[col], row[f"{col} se"] = mean_and_se(d)
        rows.append(row)
    return rows


def write_paired_table(rows: list[dict], reference: str, path: Path) -> Path:
    """Markdown: one row per method, each cell ``reference - method`` (mean ± s.e.) on shared images."""
    cols = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    ref = method_label(reference)
    lines = [
        f"Each cell: {ref} minus the method, per image on the images both scored, mean ± s.e.; "
        f"negative favours {ref} on ↓ metrics, positive on ↑ ones.",
        "",
        f"| {ref} minus | n | " + " | ".join(f"{c} {'↓' if BETTER.get(c) == 'lower' else '↑'}" for c in cols) + " |",
        "|" + "---|" * (len(cols) + 2),
    ]
    for r in rows:
        cells = [method_label(r["method"]), str(r["n"])]
        cells += [f"{_fmt(c, r[c])} ± {_fmt(c, r[c + ' se'])}" if c in r else "–" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path
