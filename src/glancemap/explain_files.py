"""Explaining image files in bulk: per image an overlay (PNG) and the raw maps (.npy), plus a summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .images import BadFileLog, image_batches
from .visualization import explanation_panel

DEMO_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")


def explain_files(files: Sequence[Path], explainer, out: Path, top_k: int, batch_size: int) -> dict:
    """Writes ``<stem>.png`` (overlays of the top-k classes) and ``<stem>.npy`` ``(k,H,W)`` per readable file."""
    transform = explainer.backbone.preprocessing.eval_transform()
    bad = BadFileLog()
    summary: dict[str, dict] = {}
    used: set[str] = set()
    k = explainer.num_classes
    if not 1 <= top_k <= k:
        raise ValueError(f"top_k must be an integer >= 1 and <= the explainer's {k} classes, got {top_k}")
    out.mkdir(parents=True, exist_ok=True)
    for chunk, images in image_batches(files, transform, batch_size, bad):
        images = images.to(explainer.device)
        result = explainer.predict_and_explain(images, top_k=top_k)
        for i, f in enumerate(chunk):
            stem = f.stem
            n = 1
            while stem in used:  # same name in two folders
                n += 1
                stem = f"{f.stem}_{n}"
            used.add(stem)
            classes = result["classes"][i].tolist()
            scores = result["scores"][i].tolist()
            names = [explainer.class_names[c] for c in classes]
            maps = result["maps"][i]
            explanation_panel(images[i], maps, names, scores, title=f.name).save(out / f"{stem}.png")
            np.save(out / f"{stem}.npy", maps.cpu().numpy().astype(np.float32))
            summary[str(f)] = {"output": stem, "classes": classes, "names": names, "scores": scores}
    (out / "summary.json").write_text(json.dumps({"explained": summary, "skipped": bad.seen}, indent=1))
    return {"explained": len(summary), "skipped": bad.count}


def demo_files(folder: Path) -> list[Path]:
    """scikit-image's sample photos written as PNGs into ``folder`` (needs the ``demo`` extra)."""
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise ImportError("the demo uses scikit-image's sample photos: pip install 'glancemap[demo]'") from exc
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name in DEMO_IMAGES:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skdata, name)()).save(path)
        files.append(path)
    return files
