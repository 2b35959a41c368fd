"""Faithfulness benchmark: every method on the same backbone, images and metrics.

Per-image results stream to ``results.jsonl`` (one line per method and image,
flushed per batch), so a killed run resumes where it stopped and never
recomputes a finished image. :func:`summarize` turns the lines into a table of
means with standard errors, seconds per map and passes per map.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .images import BadFileLog, BadImageError, load_image
from .methods import METHODS, MethodContext, create_method, explainer_identity, method_label, method_names
from .metrics import PassCounter, confidence_change, deletion_insertion, road


class EvaluationMismatchError(RuntimeError):
    """An output folder holds results made with another backbone, explainer or metric setting."""


@dataclass
class MetricConfig:
    """Every metric parameter the literature disagrees on, stored beside the results."""

    keeps: tuple[float, ...] = (1.0, 0.5, 0.15)  # AD/IC: fraction of map pixels kept
    road_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)  # ROAD: fraction removed
    imputation: str = "telea"  # ROAD fill: telea | linear
    deletion_steps: int = 16  # deletion/insertion curve points minus one; 0 skips them
    deletion_substrate: str = "black"
    insertion_substrate: str = "blur"
    seed: int = 0  # tie-breaking of pixel rankings
    score: str = "softmax probability of the clean top-1 class; ROAD: top-1 agreement"
    space: str = "[0,1] RGB pixels, before the classifier's normalization"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def plan_methods(
    names: Sequence[str], context: MethodContext, others: dict[str, object] | None = None
) -> tuple[dict[str, Callable[[], Callable]], dict[str, dict]]:
    """Factories (built only when a method has images left) and identities of registered methods,
    plus ``others``: further P-TAME explainers for the same backbone, scored as ``ptame-<name>``."""
    factories: dict[str, Callable[[], Callable]] = {}
    identities: dict[str, dict] = {}
    for name in names:
        spec = METHODS[name]
        factories[name] = lambda name=name: create_method(name, context)
        identities[name] = spec.identity(context)
    for label, other in (others or {}).items():
        name = f"ptame-{label}"
        if name in factories:
            raise ValueError(f"--also name {label!r} is taken; pick another")
        factories[name] = lambda other=other: other
        identities[name] = explainer_identity(other)
    return factories, identities


# ------------------------------------------------------------------ per batch


def score_batch(backbone, method, images: torch.Tensor, config: MetricConfig) -> list[dict]:
    """All metrics for one batch of ``[0,1]`` images; one record per image."""
    with torch.no_grad():
        clean = backbone(images).softmax(dim=1)
    targets = clean.argmax(dim=1)
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with PassCounter(backbone=backbone, auxiliary=getattr(method, "auxiliary", None)) as counter:
        maps = method(images, targets)
    sync()
    seconds = (time.perf_counter() - t0) / len(images)
    if maps.ndim != 4 or maps.shape[:2] != (len(images), 1):
        raise ValueError(f"a method must return (B,1,h,w) maps for B={len(images)}, got {tuple(maps.shape)}")
    maps = maps.detach().float()
    cols: dict[str, torch.Tensor] = {}
    for keep in config.keeps:
        cc = confidence_change(backbone, images, maps, keep=keep, clean_probs=clean)
        cols[f"AD@{round(keep * 100)}"], cols[f"IC@{round(keep * 100)}"] = cc["drop"], cc["increase"]
    r = road(backbone, images, maps, config.road_fractions, config.imputation, targets, config.seed)
    cols["ROAD MoRF"], cols["ROAD LeRF"] = r["morf_auc"], r["lerf_auc"]
    cols["ROAD LeRF-MoRF"] = r["lerf_auc"] - r["morf_auc"]
    if config.deletion_steps:
        di = deletion_insertion(
            backbone,
            images,
            maps,
            config.deletion_steps,
            targets,
            config.deletion_substrate,
            config.insertion_substrate,
            seed=config.seed,
        )
        cols["deletion"], cols["insertion"] = di["deletion_auc"], di["insertion_auc"]
    per_map = {f"{k.replace('_', ' ')}/map": v / len(images) for k, v in counter.counts.items()}
    records = []
    for i in range(len(images)):
        rec = {"target": int(targets[i]), "clean_score": round(float(clean[i, targets[i]]), 6)}
        rec |= {k: round(float(v[i]), 6) for k, v in cols.items()}
        rec |= {"road_morf_curve": r["morf"][i].tolist(), "road_lerf_curve": r["lerf"][i].tolist()}
        rec |= {"sec/map": seconds} | per_map
        records.append(rec)
    return records


# ------------------------------------------------------------ the streamed run


def _read_done(path: Path) -> set[tuple[str, str]]:
    """Finished (method, file) keys; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as fh:
            fh.truncate(len(raw))
    done = set()
    for line in raw.decode().splitlines():
        if line.strip():
            rec = json.loads(line)
            done.add((rec["method"], rec["file"]))
    return done


@dataclass
class Run:
    """Where and how a benchmark runs.

    ``identity`` (backbone, weights) and ``config`` must match an existing
    folder's. ``methods`` gives each method's own identity (an explainer's
    weights hash, RISE's mask count); a method already in the folder must match
    it, a new one is added, so one folder can grow method by method.
    """

    out: Path
    backbone: object
    identity: dict
    config: MetricConfig = field(default_factory=MetricConfig)
    methods: dict[str, dict] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        return self.out / "results.jsonl"

    def open(self) -> set[tuple[str, str]]:
        self.out.mkdir(parents=True, exist_ok=True)
        meta = self.out / "run.json"
        have = json.loads(meta.read_text()) if meta.exists() else None
        wanted = {"identity": self.identity, "metrics": self.config.to_dict(), "methods": dict(self.methods)}
        if have is not None:
            diff = sorted(
                k
                for part in ("identity", "metrics")
                for k in set(have.get(part, {})) | set(wanted[part])
                if have.get(part, {}).get(k) != wanted[part].get(k)
            )
            diff += sorted(
                f"method {m}"
                for m, ident in self.methods.items()
                if m in have.get("methods", {}) and have["methods"][m] != ident
            )
            if diff:
                raise EvaluationMismatchError(
                    f"{self.out} holds results made with other settings ({', '.join(diff)}); "
                    "use another --out or delete it"
                )
            wanted["methods"] = have.get("methods", {}) | wanted["methods"]
        if wanted != have:
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(wanted, indent=1))
            os.replace(tmp, meta)
        return _read_done(self.results)


def run_evaluation(
    run: Run,
    files: Sequence[Path],
    methods: dict[str, Callable[[], Callable]],
    limits: dict[str, int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """Scores every method on ``files`` (the first ``limits[name]`` for a method
    with a limit), appending to ``run.results`` and skipping finished images.

    ``methods`` maps names to zero-argument factories (``lambda: GradCamMethod(bb)``):
    a method is built only when it has images left to score.
    """
    from tqdm.auto import tqdm

    done = run.open()
    backbone = run.backbone
    transform = backbone.preprocessing.eval_transform()
    bad = BadFileLog()
    limits = limits or {}
    with open(run.results, "a") as sink:
        for name, factory in methods.items():
            mine = list(files[: limits.get(name, len(files))])
            todo = [f for f in mine if (name, str(f)) not in done]
            method = factory() if todo else None
            bar = tqdm(
                total=len(mine),
                initial=len(mine) - len(todo),
                desc=f"{name:>11s}",
                unit="img",
                disable=not progress,
                dynamic_ncols=True,
            )
            for start in range(0, len(todo), batch_size):
                chunk, tensors = [], []
                for f in todo[start : start + batch_size]:
                    if str(f) in bad.seen:  # found unreadable for an earlier method: not read again
                        bar.update(1)
                        continue
                    try:
                        tensors.append(transform(load_image(f)))
                        chunk.append(f)
                    except BadImageError as exc:
                        bad.report(f, str(exc))
                        bar.update(1)
                if not chunk:
                    continue
                images = torch.stack(tensors).to(backbone.device)
                for f, rec in zip(chunk, score_batch(backbone, method, images, run.config)):
                    sink.write(json.dumps({"method": name, "file": str(f)} | rec) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                bar.update(len(chunk))
            bar.close()
    return run.results


# ------------------------------------------------------------------ one call

DEFAULT_METHODS = "ptame,gradcam,gradcam++,layercam,eigencam,auxcam,gaussian,random"


def evaluate(
    data: Sequence[str],
    out: str | os.PathLike | None = None,
    methods: str = DEFAULT_METHODS,
    explainer: str | os.PathLike = "default",
    also: dict[str, str] | None = None,
    backbone: str | None = None,
    backbone_weights: str | None = None,
    limit: int | None = None,
    limit_for: dict[str, int] | None = None,
    batch_size: int = 16,
    extra_aux_sizes: Sequence[int] | None = None,
    metrics: MetricConfig | None = None,
    options: dict | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Scores ``methods`` (registered names, or ``"all"``) on the images of ``data`` and writes
    ``results.jsonl``, ``run.json``, ``table.md``, ``table.csv`` and, with P-TAME among them,
    ``paired.md`` into ``out`` (default ``runs/eval-<backbone>``). Returns ``out``.

    The backbone is the explainer's unless ``backbone`` names another; ``also`` maps names to
    further explainer folders for the same backbone, scored as ``ptame-<name>``; ``options``
    holds method settings (``cam_batch_size``, ``rise_masks``, ``opticam_steps``).
    """
    from .explainer import explainer_dir, load_explainer, network_from_config, read_explainer_config
    from .images import list_images
    from .models import load_classifier

    names = method_names(methods)
    directory = explainer_dir(explainer)
    cfg = read_explainer_config(directory)
    bb = load_classifier(
        backbone or cfg["backbone"]["name"],
        backbone_weights or (None if backbone else cfg["backbone"].get("weights")),
        device=device,
    ).freeze()
    needs = {METHODS[n].needs for n in names}
    ptame = None
    if "explainer" in needs:
        ptame = load_explainer(directory, backbone=bb, device=device)
        if extra_aux_sizes is not None:
            ptame = ptame.with_extra_aux_sizes(extra_aux_sizes)
    auxiliary = (
        ptame.auxiliary if ptame else (network_from_config(cfg, "auxiliary", device) if "auxiliary" in needs else None)
    )
    files = list_images(data)[:limit]
    if not files:
        raise ValueError("no images found in --data")
    others = {}
    for label, path in (also or {}).items():
        same_aux = auxiliary is not None and read_explainer_config(path)["auxiliary"] == cfg["auxiliary"]
        others[label] = load_explainer(path, backbone=bb, auxiliary=auxiliary if same_aux else None, device=device)
    context = MethodContext(bb, ptame, auxiliary, dict(options or {}))
    factories, identities = plan_methods(names, context, others)
    unknown = sorted(set(limit_for or {}) - set(factories))
    if unknown:
        raise ValueError(f"--limit-for names methods that are not evaluated: {', '.join(unknown)}")
    out = Path(out or f"runs/eval-{bb.name}")
    run = Run(
        out=out,
        backbone=bb,
        identity={"backbone": bb.describe() | {"weights": bb.weights_ref}},
        config=metrics or MetricConfig(),
        methods=identities,
    )
    log(
        f"evaluating {', '.join(factories)} on {len(files)} images, backbone {bb.name} on {device}; "
        f"per-image results stream to {run.results}"
    )
    run_evaluation(run, files, factories, limit_for, batch_size, progress=progress)
    write_tables(summarize(run.results), out)
    if "ptame" in factories:
        write_paired_table(paired_differences(run.results, "ptame"), "ptame", out / "paired.md")
    return out


# ------------------------------------------------------------------ the table

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
)
COST_COLUMNS = ("sec/map", "backbone forward/map", "backbone backward/map", "auxiliary forward/map")
BETTER = {"AD@100": "lower", "AD@50": "lower", "AD@15": "lower", "ROAD MoRF": "lower", "deletion": "lower"}


def read_results(results: Path) -> dict[str, dict[str, dict]]:
    """``{method: {file: record}}`` from a results JSONL, methods in first-seen order."""
    per_method: dict[str, dict[str, dict]] = {}
    for line in Path(results).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
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
    if col.startswith(("ROAD", "deletion", "insertion")):
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
