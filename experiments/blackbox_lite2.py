"""Gradient-free training against a true black box, compared with what gradients buy (docs/results.md).

    python experiments/blackbox_lite2.py --train splits/train.txt --dev splits/dev.txt --out runs/blackbox \
        [--max-steps N] [--call-budget 100] [--limit N] [--limit-for rise=16]

EfficientNet-Lite2 is exported to ONNX and loaded with ``onnx:``, so training sees only
ONNX Runtime's outputs (a black box: no layers, no gradients). The default ``train`` recipe
runs on the train images (gradient-free, chosen by itself); it resumes if interrupted. Then
every method is scored on the dev images with the PyTorch Lite2 (the same function; its
top-1 agrees with the ONNX file's): the gradient-free explainer (``ptame-blackbox``, the
paired reference), the shipped gradient-trained head (``ptame``), RISE (what black-box users
have today; its queries go to the ONNX file, as a black-box user's would), the auxiliary CAM
and the centred Gaussian. Writes ``table.md`` and ``paired.md`` into ``<out>/eval``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from glancemap import load_explainer
from glancemap.evaluation import MetricConfig
from glancemap.evaluation.stream import Run, plan_methods, run_evaluation
from glancemap.evaluation.tables import paired_differences, summarize, write_paired_table, write_tables
from glancemap.images import list_images
from glancemap.methods import MethodContext, create_method
from glancemap.models import export_classifier_onnx, load_classifier
from glancemap.training import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--dev", nargs="+", required=True)
    ap.add_argument("--out", default="runs/blackbox")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--call-budget", type=float, default=100.0)
    ap.add_argument("--limit", type=int, default=None, help="first N dev images")
    ap.add_argument("--limit-for", action="append", default=[], metavar="METHOD=N")
    ap.add_argument("--methods", default="ptame,rise,auxcam,gaussian")
    ap.add_argument("--deletion-steps", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch_lite2 = load_classifier("efficientnet_lite2")
    onnx_path = out / "lite2.onnx"
    if not onnx_path.exists():
        export_classifier_onnx(torch_lite2, onnx_path)
    trained = out / "train" / "explainer"
    if not (trained / "config.json").exists():
        config = TrainConfig(
            data=args.train,
            out=str(out / "train"),
            backbone=f"onnx:{onnx_path}",
            max_steps=args.max_steps,
            call_budget=args.call_budget,
            workers=0,
        )
        train(config, resume=(out / "train" / "checkpoint.safetensors").exists())
    blackbox = load_explainer(trained)  # its backbone: the ONNX file, as trained
    shipped = load_explainer("default", backbone=torch_lite2)
    context = MethodContext(torch_lite2, shipped, shipped.auxiliary, {})
    names = [m for m in args.methods.split(",") if m]
    factories, identities = plan_methods(names, context, {"blackbox": blackbox})
    if "rise" in factories:
        # RISE as a black-box user runs it: its 4000 queries per map go to the ONNX file (the
        # scores, like every method's, come from the PyTorch Lite2)
        factories["rise"] = lambda: create_method("rise", replace(context, backbone=blackbox.backbone))
        identities["rise"] = {**identities["rise"], "queries": str(onnx_path)}
    files = list_images(args.dev)[: args.limit]
    run = Run(
        out=out / "eval",
        backbone=torch_lite2,
        identity={"backbone": torch_lite2.describe(), "trained_against": str(onnx_path)},
        config=MetricConfig(deletion_steps=args.deletion_steps),
        methods=identities,
    )
    limits = {k: int(v) for k, v in (item.split("=", 1) for item in args.limit_for)}
    run_evaluation(run, files, factories, limits)
    write_tables(summarize(run.results), run.out)
    write_paired_table(paired_differences(run.results, "ptame-blackbox"), "ptame-blackbox", run.out / "paired.md")
    print((run.out / "table.md").read_text())
    print((run.out / "paired.md").read_text())


if __name__ == "__main__":
    main()
