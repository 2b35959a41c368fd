"""How far an exported explainer's maps are from PyTorch's, on real images (docs/results.md, "ONNX").

    python experiments/onnx_agreement.py splits/dev.txt [--explainer default] [--batch-size 16] [--float64]
        [--graph-optimization all|none]

Exports the explainer (both variants) and its backbone, runs ONNX Runtime and
PyTorch on the same images and prints the largest absolute difference of the
maps and of every class's head-resolution maps, and how often the backbone as an
ONNX black box (``onnx:`` loader) agrees with PyTorch on the top-1 class.
``--graph-optimization none`` runs the explainer's files with ONNX Runtime's graph
optimizations off (no Conv+BatchNorm fusion, no layout changes) instead of all on,
the default. ``--float64`` also prints how far PyTorch's own float32 maps are from the same
explainer run in float64: the rounding any float32 runtime carries; and where the
class gate's share of it comes from: the readout's per-pixel log-probabilities
(what the gate exponentiates) computed in float32, and in float64 from the float32
features, each against the float64 run.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from glancemap import load_explainer
from glancemap.explainer.explainer import readout_logits
from glancemap.explainer.onnx import export_onnx
from glancemap.images import list_images, load_image
from glancemap.models import export_classifier_onnx, load_classifier

LEVELS = {"all": "ORT_ENABLE_ALL", "none": "ORT_DISABLE_ALL"}  # ONNX Runtime's default, and no rewriting


def session(path: Path, level: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--float64", action="store_true", help="also compare PyTorch float32 with float64")
    ap.add_argument("--graph-optimization", choices=list(LEVELS), default="all")
    args = ap.parse_args()
    explainer = load_explainer(args.explainer)
    exact = copy.deepcopy(explainer).double() if args.float64 else None
    worst64 = worst64_all = worst_logp = worst_logp_f32_features = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        maps = load_explainer(export_onnx(explainer, Path(tmp) / "maps.onnx"), backbone=explainer.backbone)
        every = load_explainer(export_onnx(explainer, Path(tmp) / "all.onnx", "all"), backbone=explainer.backbone)
        for onnx_explainer in (maps, every):
            onnx_explainer.session = session(onnx_explainer.path, args.graph_optimization)
        black_box = load_classifier(f"onnx:{export_classifier_onnx(explainer.backbone, Path(tmp) / 'bb.onnx')}")
        agree, worst_probs = 0, 0.0
        transform = explainer.backbone.preprocessing.eval_transform()
        files = list_images(args.data)
        worst_maps = worst_all = 0.0
        for i in range(0, len(files), args.batch_size):
            x = torch.stack([transform(load_image(f)) for f in files[i : i + args.batch_size]])
            t = explainer.backbone.predict(x)[0]
            ours, ours_all = explainer(x, t), explainer.all_maps(x, "head")
            worst_maps = max(worst_maps, (maps(x, t) - ours).abs().max().item())
            worst_all = max(worst_all, (every.all_maps(x) - ours_all).abs().max().item())
            if exact is not None:
                worst64 = max(worst64, (ours.double() - exact(x.double(), t)).abs().max().item())
                worst64_all = max(
                    worst64_all, (ours_all.double() - exact.all_maps(x.double(), "head")).abs().max().item()
                )
                with torch.no_grad():
                    last, last64 = explainer.features(x)[-1], exact.features(x.double())[-1]
                    readout = explainer.head.readout
                    # per-pixel log-probabilities: what the class gate exponentiates
                    logp64 = readout_logits(last64, readout.double()).log_softmax(1)
                    gap = (readout_logits(last, readout).log_softmax(1).double() - logp64).abs().max().item()
                    gap_f32 = (
                        (readout_logits(last.double(), readout.double()).log_softmax(1) - logp64).abs().max().item()
                    )
                worst_logp, worst_logp_f32_features = max(worst_logp, gap), max(worst_logp_f32_features, gap_f32)
            p, q = explainer.backbone(x).softmax(1), black_box(x).softmax(1)
            agree += (p.argmax(1) == q.argmax(1)).sum().item()
            worst_probs = max(worst_probs, (p - q).abs().max().item())
    print(
        f"{len(files)} images, explainer {args.explainer} (auxiliary sides {explainer.aux_sizes}), ONNX Runtime "
        f"graph optimization {args.graph_optimization}"
    )
    print(f"  maps of the backbone's top-1, (B,1,H,W): max abs difference {worst_maps:.2e}")
    print(f"  every class's map at head resolution, (B,K,h,w): max abs difference {worst_all:.2e}")
    if exact is not None:
        print(f"  PyTorch float32 against float64: top-1 maps {worst64:.2e}, every class's map {worst64_all:.2e}")
        print(
            f"  the readout's per-pixel log-probabilities against float64: float32 {worst_logp:.2e}; "
            f"float64 arithmetic on the float32 features {worst_logp_f32_features:.2e}"
        )
    print(f"  backbone as an ONNX black box: top-1 agrees on {agree}/{len(files)}, softmax max abs difference "
          f"{worst_probs:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
