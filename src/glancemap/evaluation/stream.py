"""The streamed, resumable results file: one JSON line per method and image, flushed per batch,
so a killed run resumes where it stopped and never recomputes a finished image."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..images import BadFileLog, image_batches
from ..methods import METHODS, MethodContext, create_method, explainer_identity
from .scoring import MetricConfig, score_batch
from .tables import result_records


class EvaluationMismatchError(RuntimeError):
    """An output folder holds results made with another backbone, explainer or metric setting."""


def plan_methods(
    names: Sequence[str],
    context: MethodContext,
    others: dict[str, object] | None = None,
    skipped: dict[str, str] | None = None,
) -> tuple[dict[str, Callable[[], Callable]], dict[str, dict]]:
    """Factories and identities of registered methods, plus ``others``: further P-TAME explainers
    for the same backbone, scored as ``ptame-<name>``. Every method is built here, so one that
    cannot run on this backbone is refused before any image is scored; given ``skipped``, it is
    left out instead and ``skipped[name]`` says why."""
    factories: dict[str, Callable[[], Callable]] = {}
    identities: dict[str, dict] = {}
    for name in names:
        spec = METHODS[name]
        try:
            method = create_method(name, context)
        except ValueError as exc:
            if skipped is None:
                raise
            skipped[name] = str(exc)
            continue
        factories[name] = lambda method=method: method
        identities[name] = spec.identity(context)
    for label, other in (others or {}).items():
        name = f"ptame-{label}"
        if name in factories:
            raise ValueError(f"--also name {label!r} is taken; pick another")
        factories[name] = lambda other=other: other
        identities[name] = explainer_identity(other)
    return factories, identities


def _read_done(path: Path) -> set[tuple[str, str]]:
    """Finished (method, file) keys; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as fh:
            fh.truncate(len(raw))
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; delete it or use another --out") from None
    return {(rec["method"], rec["file"]) for rec in result_records(path, text)}


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
            # files found unreadable for an earlier method are in `bad` and are not read again
            for chunk, images in image_batches(todo, transform, batch_size, bad):
                images = images.to(backbone.device)
                for f, rec in zip(chunk, score_batch(backbone, method, images, run.config)):
                    sink.write(json.dumps({"method": name, "file": str(f)} | rec) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                bar.update(len(chunk))
            bar.update(bar.total - bar.n)  # the unreadable files
            bar.close()
    return run.results
