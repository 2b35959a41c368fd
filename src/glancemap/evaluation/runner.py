"""One call from explainer and image folders to a finished benchmark folder (``glancemap evaluate``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..explainer import explainer_dir, load_explainer, network_from_config, read_explainer_config
from ..images import list_images
from ..methods import METHODS, MethodContext, method_names
from ..models import load_classifier
from .grid import GridConfig, run_grid_evaluation
from .scoring import MetricConfig
from .stream import Run, plan_methods, run_evaluation
from .tables import paired_differences, read_results, summarize, write_paired_table, write_tables

DEFAULT_METHODS = "ptame,gradcam,gradcam++,layercam,eigencam,auxcam,gaussian,random"


def evaluate(
    data: Sequence[str],
    out: str | os.PathLike | None = None,
    methods: str | None = None,
    explainer: str | os.PathLike = "default",
    also: dict[str, str] | None = None,
    backbone: str | None = None,
    backbone_weights: str | None = None,
    limit: int | None = None,
    limit_for: dict[str, int] | None = None,
    batch_size: int = 16,
    aux_sides: Sequence[int] | None = None,
    metrics: MetricConfig | None = None,
    options: dict | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    grid: GridConfig | None = None,
) -> Path:
    """Scores ``methods`` (registered names, or ``"all"``) on the images of ``data`` and writes
    ``results.jsonl``, ``run.json``, ``table.md``, ``table.csv`` and, with P-TAME among them,
    ``paired.md`` into ``out`` (default ``runs/eval-<backbone>``). Returns ``out``.

    The backbone is the explainer's unless ``backbone`` names another; ``also`` maps names to
    further explainer folders for the same backbone, scored as ``ptame-<name>``; ``options``
    holds method settings (``cam_batch_size``, ``rise_masks``, ``opticam_steps``). ``methods=None``
    scores :data:`DEFAULT_METHODS` less those that cannot run here (a gradient method on a black-box
    backbone, say), naming each in the log; methods named explicitly must all run.

    ``limit_for`` scores a method on its first N images only (with ``grid``: its first N grids).
    With ``grid``, the methods play the grid pointing game instead (:mod:`glancemap.localization`),
    into ``<out>/grid<n>``, which is returned.
    """
    names = method_names(methods or DEFAULT_METHODS)
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
        if aux_sides:
            ptame = ptame.with_aux_sizes(aux_sides)
    auxiliary = getattr(ptame, "auxiliary", None)  # an exported (ONNX) explainer has none in PyTorch
    if auxiliary is None and "auxiliary" in needs:
        auxiliary = network_from_config(cfg, "auxiliary", device)
    files = list_images(data)[:limit]
    if not files:
        raise ValueError("no images found in --data")
    others = {}
    for label, path in (also or {}).items():
        same_aux = auxiliary is not None and read_explainer_config(path)["auxiliary"] == cfg["auxiliary"]
        others[label] = load_explainer(path, backbone=bb, auxiliary=auxiliary if same_aux else None, device=device)
    context = MethodContext(bb, ptame, auxiliary, dict(options or {}))
    skipped: dict[str, str] | None = {} if methods is None else None
    factories, identities = plan_methods(names, context, others, skipped)
    for name, why in (skipped or {}).items():
        log(f"leaving out {name}, which cannot run here: {why}")
    unknown = sorted(set(limit_for or {}) - set(factories))
    if unknown:
        raise ValueError(f"--limit-for names methods that are not evaluated: {', '.join(unknown)}")
    out = Path(out or f"runs/eval-{bb.name}")
    if grid is not None:
        out = out / f"grid{grid.n}"
    run = Run(
        out=out,
        backbone=bb,
        identity={"backbone": bb.describe() | {"weights": bb.weights_ref}},
        config=grid or metrics or MetricConfig(),
        methods=identities,
    )
    log(
        f"evaluating {', '.join(factories)} on {len(files)} images, backbone {bb.name} on {device}; "
        f"per-image results stream to {run.results}"
    )
    if grid is not None:
        grids = run_grid_evaluation(run, files, factories, grid, batch_size, progress=progress, limits=limit_for)
        if not grids:
            raise ValueError(
                f"too few confidently classified images of different classes for one {grid.n}x{grid.n} grid "
                f"(softmax >= {grid.threshold}); give more images or lower --grid-threshold"
            )
        log(f"{len(grids)} grids of {grid.n}x{grid.n} from {len(files)} images")
    else:
        run_evaluation(run, files, factories, limit_for, batch_size, progress=progress)
        scored = {f for by_file in read_results(run.results).values() for f in by_file}
        if not scored & {str(f) for f in files}:
            raise ValueError(f"none of the {len(files)} image(s) could be read, so nothing was scored")
    write_tables(summarize(run.results), out)
    if "ptame" in factories:
        write_paired_table(paired_differences(run.results, "ptame"), "ptame", out / "paired.md")
    return out
