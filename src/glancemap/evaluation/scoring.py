"""Every metric for one batch of images and maps: the per-image records the benchmark streams."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..metrics import PassCounter, confidence_change, deletion_insertion, road


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
