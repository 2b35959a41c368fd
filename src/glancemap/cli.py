"""The ``glancemap`` command: train, explain, evaluate, sanity, info, demo, split."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .explainer.perturbation import REMOVAL_FILLS
    from .training.trainer import PRESETS

    p = sub.add_parser("train", help="train an explainer head on image folders")
    p.add_argument("data", nargs="+", help="image files, folders (recursive) or .txt lists of paths")
    p.add_argument("--out", required=True, help="output folder (checkpoint, log, explainer/)")
    p.add_argument("--backbone", default="efficientnet_lite2", help="classifier to explain")
    p.add_argument("--backbone-weights", default=None, help="local weights file, or 'random'")
    p.add_argument("--auxiliary", default="efficientnet_lite0", help="frozen feature network")
    p.add_argument("--auxiliary-weights", default=None, help="local weights file, or 'random'")
    p.add_argument("--layers", default=None, help="comma-separated auxiliary module names")
    p.add_argument("--aux-input-size", type=int, default=None, help="side the auxiliary sees (default: its own)")
    p.add_argument("--extra-aux-sizes", type=int, nargs="+", default=[], metavar="SIDE",
                   help="multi-scale inference: also run the auxiliary at these sides and average the maps "
                        "(saved in the explainer; training is unaffected)")
    p.add_argument("--train-aux-sides", type=int, nargs="+", default=[], metavar="SIDE",
                   help="scale augmentation: each step runs the auxiliary at one of these sides, drawn at random")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="loss weights and weight decay")
    p.add_argument("--init", default="aux-cam", choices=["aux-cam", "paper"],
                   help="aux-cam: start from the auxiliary's CAM (ours); paper: default init")
    p.add_argument("--ce", type=float, help="override the CE weight")
    p.add_argument("--area", type=float, help="override the area weight")
    p.add_argument("--tv", type=float, help="override the TV weight")
    p.add_argument("--destroy", type=float,
                   help="weight of our removal term (map's region blurred away must lose the class); 0 = paper")
    p.add_argument("--destroy-fill", choices=REMOVAL_FILLS,
                   help="what replaces the removed region in the removal term: a blurred copy (default), colour "
                        "diffused in from the kept pixels (a differentiable stand-in for ROAD's inpainting), or "
                        "that diffusion at three scales so large holes fill too (inpaint)")
    p.add_argument("--destroy-sigma", type=float, help="pixels, of that blur or diffusion (default 5)")
    p.add_argument("--rank-destroy", type=float,
                   help="weight of our ROAD-shaped removal term: each map's top f pixels (f drawn from "
                        "--rank-fractions) removed outright and filled from the rest of the image must lose the "
                        "class (0 = off)")
    p.add_argument("--rank-fractions", type=float, nargs=2, metavar=("LO", "HI"),
                   help="range of the fraction removed by --rank-destroy (default 0.1 0.5)")
    p.add_argument("--init-from", default=None, help="start from this saved explainer's head (fine-tune)")
    p.add_argument("--head", default="auto", choices=["auto", "shared", "per-class"],
                   help="shared: one projection read through the auxiliary's classifier, so classes absent from "
                        "the training images are trained too (needs the backbone's classes on the auxiliary); "
                        "per-class: the paper's head, fusion weights of its own per class; auto: shared when "
                        "possible")
    p.add_argument("--p-area", type=float, help="override the area exponent")
    p.add_argument("--beta", type=float, help="override the border weight of TV")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.25, 1.0), metavar=("MIN", "MAX"))
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between atomic checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.safetensors")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dump-rank-weights", action="store_true", help=argparse.SUPPRESS)


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train

    overrides = {k: getattr(args, a) for k, a in
                 [("ce", "ce"), ("area", "area"), ("tv", "tv"), ("p_area", "p_area"), ("beta", "beta"),
                  ("destroy", "destroy"), ("destroy_fill", "destroy_fill"), ("destroy_sigma", "destroy_sigma"),
                  ("rank_destroy", "rank_destroy"), ("rank_fractions", "rank_fractions")]
                 if getattr(args, a) is not None}
    config = TrainConfig(
        data=list(args.data), out=args.out, backbone=args.backbone, backbone_weights=args.backbone_weights,
        auxiliary=args.auxiliary, auxiliary_weights=args.auxiliary_weights,
        layers=args.layers.split(",") if args.layers else None,
        aux_input_size=[args.aux_input_size] * 2 if args.aux_input_size else None,
        extra_aux_sizes=list(args.extra_aux_sizes), train_aux_sides=list(args.train_aux_sides),
        preset=args.preset, loss=overrides, weight_decay=args.weight_decay, init=args.init, init_from=args.init_from,
        head=args.head,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, crop_scale=tuple(args.crop_scale),
        max_steps=args.max_steps, checkpoint_every=args.checkpoint_every, workers=args.workers,
        seed=args.seed, device=args.device, dump_rank_weights=args.dump_rank_weights,
        command="glancemap " + " ".join(sys.argv[1:]),
    )
    t0 = time.time()
    explainer = train(config, resume=args.resume, progress_bar=not args.no_progress)
    info = explainer.training_info
    print(f"trained {info['steps']} steps on {info['images']} images in {time.time() - t0:.0f}s "
          f"(skipped {info['skipped_files']} bad files); explainer saved to {Path(args.out) / 'explainer'}")
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="write overlays and raw maps for images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--explainer", default="default", help="explainer folder, or a shipped name (default, efficientnet_lite1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    _add_aux_sizes_option(p)


def _add_aux_sizes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extra-aux-sizes", type=int, nargs="*", default=None, metavar="SIDE",
                   help="override the explainer's multi-scale sides (none given: a single auxiliary pass)")


def _apply_aux_sizes(explainer, args: argparse.Namespace):
    """The explainer with ``--extra-aux-sizes`` applied, if given."""
    return explainer if args.extra_aux_sizes is None else explainer.with_extra_aux_sizes(args.extra_aux_sizes)


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def explain_files(files: Sequence[Path], explainer, out: Path, top_k: int, batch_size: int) -> dict:
    """Writes ``<stem>.png`` (overlays of the top-k classes) and ``<stem>.npy`` ``(k,H,W)`` per readable file."""
    from .images import BadFileLog, BadImageError, load_image
    from .visualization import explanation_panel

    out.mkdir(parents=True, exist_ok=True)
    transform = explainer.backbone.preprocessing.eval_transform()
    bad = BadFileLog()
    summary: dict[str, dict] = {}
    used: set[str] = set()
    k = min(top_k, explainer.num_classes)
    for start in range(0, len(files), batch_size):
        chunk, tensors = [], []
        for f in files[start : start + batch_size]:
            try:
                tensors.append(transform(load_image(f)))
                chunk.append(f)
            except BadImageError as exc:
                bad.report(f, str(exc))
        if not chunk:
            continue
        images = torch.stack(tensors).to(explainer.device)
        result = explainer.predict_and_explain(images, top_k=k)
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


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explainer import load_explainer
    from .images import list_images

    explainer = load_explainer(args.explainer, device=_device(args.device))
    explainer = _apply_aux_sizes(explainer, args)
    files = list_images(args.inputs)
    counts = explain_files(files, explainer, Path(args.out), args.top_k, args.batch_size)
    print(f"explained {counts['explained']} image(s) into {args.out}; skipped {counts['skipped']} unreadable file(s)")
    return 0 if counts["explained"] else 1


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices and an explainer's configuration")
    p.add_argument("--explainer", default="default")


def _cmd_info(args: argparse.Namespace) -> int:
    from .version import __version__
    from .explainer import read_explainer_config
    from .models import available_classifiers

    print(f"glancemap {__version__}, torch {torch.__version__}, "
          f"device {'cuda (' + torch.cuda.get_device_name() + ')' if torch.cuda.is_available() else 'cpu'}")
    print("classifiers:")
    for name, what in available_classifiers().items():
        print(f"  {name:22s} {what}")
    cfg = read_explainer_config(args.explainer)
    print(f"explainer {args.explainer}:")
    print(f"  backbone   {cfg['backbone']['name']} ({cfg['backbone']['source']}), input {cfg['input_size']}, "
          f"{cfg['num_classes']} classes")
    print(f"  auxiliary  {cfg['auxiliary']['name']} at {cfg['aux_input_size']}, layers {cfg['layers']}")
    if cfg.get("extra_aux_sizes"):
        print(f"             and at {cfg['extra_aux_sizes']} when explaining (maps averaged)")
    print(f"  head       {cfg.get('head', 'per-class')}")
    print(f"  made with  glancemap {cfg['glancemap_version']}")
    if cfg.get("training"):
        print("  training   " + json.dumps({k: v for k, v in cfg["training"].items() if k != "final_terms"}))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="explain scikit-image's sample photos with the shipped explainer")
    p.add_argument("--out", default="demo")
    p.add_argument("--top-k", type=int, default=3)


DEMO_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from skimage import data as skdata
    except ImportError:
        print("the demo uses scikit-image's sample photos: pip install 'glancemap[demo]'", file=sys.stderr)
        return 2
    from PIL import Image

    from .explainer import load_explainer

    out = Path(args.out)
    src = out / "inputs"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for name in DEMO_IMAGES:
        path = src / f"{name}.png"
        Image.fromarray(getattr(skdata, name)()).save(path)
        files.append(path)
    explainer = load_explainer("default")
    counts = explain_files(files, explainer, out, args.top_k, batch_size=len(files))
    summary = json.loads((out / "summary.json").read_text())["explained"]
    for f, entry in summary.items():
        print(f"{Path(f).name:24s} -> " + ", ".join(f"{n.split(',')[0]} ({s:.2f})"
                                                    for n, s in zip(entry["names"], entry["scores"])))
    print(f"wrote {counts['explained']} overlay(s) and .npy maps to {out}/")
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="write train/dev file lists of the ImageNet sample (index %% 5)")
    p.add_argument("root", help="folder with labels.csv")
    p.add_argument("--out", default="splits")


def _cmd_split(args: argparse.Namespace) -> int:
    from .training import imagenet_sample_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        files = imagenet_sample_split(args.root, split)
        (out / f"{split}.txt").write_text("".join(f"{Path(f).resolve()}\n" for f in files))
        print(f"{split}: {len(files)} files -> {out / (split + '.txt')}")
    return 0


def _method_names(spec: str) -> list[str]:
    """``"gradcam,ptame"`` or ``"all"`` -> known method names, refusing unknown ones."""
    from .evaluation import METHODS

    names = list(METHODS) if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return names


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .evaluation import METHODS, MetricConfig

    d = MetricConfig()
    p = sub.add_parser("evaluate", help="faithfulness table (AD/IC, ROAD, deletion/insertion, cost) for many methods")
    p.add_argument("--data", nargs="+", required=True, help="image files, folders or .txt lists (e.g. splits/dev.txt)")
    p.add_argument("--explainer", default="default", help="P-TAME explainer folder, or a shipped name (default, efficientnet_lite1)")
    p.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                   help="another explainer for the same backbone, scored as method ptame-NAME (repeatable)")
    p.add_argument("--backbone", default=None, help="classifier to explain (default: the explainer's)")
    p.add_argument("--backbone-weights", default=None, help="local weights file, or 'random'")
    p.add_argument("--methods", default="ptame,gradcam,gradcam++,layercam,eigencam,auxcam,gaussian,random",
                   help=f"comma-separated, or 'all': {','.join(METHODS)}")
    p.add_argument("--out", default=None, help="results folder (default: runs/eval-<backbone>)")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--limit-for", action="append", default=[], metavar="METHOD=N",
                   help="first N images only for one method (repeatable), e.g. scorecam=10 for costly methods")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cam-batch-size", type=int, default=32, help="inner batch of Score-CAM/Ablation-CAM/RISE")
    p.add_argument("--rise-masks", type=int, default=4000)
    p.add_argument("--opticam-steps", type=int, default=100, help="Adam iterations per Opti-CAM map")
    _add_aux_sizes_option(p)
    p.add_argument("--imputation", default=d.imputation, choices=["telea", "linear"], help="ROAD fill")
    p.add_argument("--road-fractions", default=",".join(map(str, d.road_fractions)), help="fractions removed")
    p.add_argument("--deletion-steps", type=int, default=d.deletion_steps, help="0 skips deletion/insertion")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import (MetricConfig, Run, build_method, paired_differences, run_evaluation, summarize,
                             write_paired_table, write_tables)
    from .explainer.explainer import explainer_dir, network_from_config, read_explainer_config
    from .models import load_classifier
    from .images import list_images

    names = _method_names(args.methods)
    device = _device(args.device)
    directory = explainer_dir(args.explainer)
    cfg = read_explainer_config(directory)
    backbone = load_classifier(args.backbone or cfg["backbone"]["name"],
                               args.backbone_weights or (None if args.backbone else cfg["backbone"].get("weights")),
                               device=device).freeze()
    from .explainer import load_explainer

    uses_explainer = "ptame" in names or "ptame-single" in names
    needs_auxiliary = uses_explainer or "auxcam" in names
    explainer = None
    if uses_explainer:
        explainer = load_explainer(directory, backbone=backbone, device=device)
        explainer = _apply_aux_sizes(explainer, args)
    auxiliary = explainer.auxiliary if explainer else (
        network_from_config(cfg, "auxiliary", device) if needs_auxiliary else None)
    files = list_images(args.data)[: args.limit]
    if not files:
        raise ValueError("no images found in --data")
    config = MetricConfig(road_fractions=tuple(float(x) for x in args.road_fractions.split(",")),
                          imputation=args.imputation, deletion_steps=args.deletion_steps)
    import hashlib

    def explainer_id(d: Path, extra_aux_sizes) -> dict:
        ident = {"explainer_head_sha256": hashlib.sha256((d / "head.safetensors").read_bytes()).hexdigest()[:16]}
        if extra_aux_sizes:  # absent for single-pass maps, so older result folders stay valid
            ident["extra_aux_sizes"] = [list(s) for s in extra_aux_sizes]
        return ident

    identity = {"backbone": backbone.describe() | {"weights": backbone.weights_ref}}
    method_ids = {n: {} for n in names}
    factories = {n: (lambda n=n: build_method(n, backbone, explainer, auxiliary=auxiliary,
                                              cam_batch_size=args.cam_batch_size, rise_masks=args.rise_masks,
                                              opticam_steps=args.opticam_steps))
                 for n in names}
    if "ptame-single" in names:
        method_ids["ptame-single"] = explainer_id(directory, [])
    if "ptame" in names:
        method_ids["ptame"] = explainer_id(directory, explainer.extra_aux_sizes)
    if "rise" in names:
        method_ids["rise"] = {"masks": args.rise_masks, "seed": 0}
    if "opticam" in names:
        from .baselines import OptiCAM

        method_ids["opticam"] = {"steps": args.opticam_steps, "lr": OptiCAM.LR, "score": "logit"}
    if auxiliary is not None and "auxcam" in names:
        method_ids["auxcam"] = {"auxiliary": auxiliary.name}
    for item in args.also:
        label, _, path = item.partition("=")
        if not label or not path:
            raise ValueError(f"--also wants NAME=PATH, got {item!r}")
        if f"ptame-{label}" in names:
            raise ValueError(f"--also name {label!r} is taken; pick another")
        other_aux = read_explainer_config(path)["auxiliary"]
        shared = auxiliary if auxiliary is not None and other_aux == cfg["auxiliary"] else None  # one network, not two
        other = load_explainer(path, backbone=backbone, auxiliary=shared, device=device)
        names.append(f"ptame-{label}")
        method_ids[f"ptame-{label}"] = explainer_id(explainer_dir(path), other.extra_aux_sizes)
        factories[f"ptame-{label}"] = lambda other=other: other
    out = Path(args.out or f"runs/eval-{backbone.name}")
    run = Run(out=out, backbone=backbone, identity=identity, config=config, methods=method_ids)
    limits = {}
    for item in args.limit_for:
        method, _, n = item.partition("=")
        if method not in names or not n.isdigit():
            raise ValueError(f"--limit-for wants METHOD=N with METHOD among --methods, got {item!r}")
        limits[method] = int(n)
    print(f"evaluating {', '.join(names)} on {len(files)} images, backbone {backbone.name} on {device}; "
          f"per-image results stream to {run.results}")
    run_evaluation(run, files, factories, limits, args.batch_size, progress=not args.no_progress)
    md, path_csv = write_tables(summarize(run.results), out)
    print(md.read_text(), end="")
    print(f"wrote {md} and {path_csv}")
    reference = "ptame" if "ptame" in names else None
    if reference:
        paired = write_paired_table(paired_differences(run.results, reference), reference, out / "paired.md")
        print(paired.read_text(), end="")
        print(f"wrote {paired} (per-image differences on the images both methods scored)")
    return 0


def _add_sanity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sanity", help="model-randomisation check: do maps change when the backbone is randomised?")
    p.add_argument("--data", nargs="+", required=True, help="images to compare maps on (e.g. splits/dev.txt)")
    p.add_argument("--train-data", nargs="+", default=None,
                   help="images for P-TAME's retraining on each randomised backbone (needed for 'ptame')")
    p.add_argument("--explainer", default="default", help="names the backbone and auxiliary")
    p.add_argument("--methods", default="ptame,gradcam,gradcam++,auxcam")
    p.add_argument("--images", type=int, default=16, help="first N images of --data")
    p.add_argument("--max-stages", type=int, default=6,
                   help="randomise block by block for this many stages, the last one taking all the rest")
    p.add_argument("--ptame-steps", type=int, default=60, help="head training steps per backbone, stage 0 included")
    p.add_argument("--ptame-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None,
                   help="P-TAME retraining learning rate (default: the explainer's own; its head, loss and init "
                        "are always the explainer's own)")
    p.add_argument("--out", default="runs/sanity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _cmd_sanity(args: argparse.Namespace) -> int:
    from .evaluation import build_method
    from .explainer.explainer import network_from_config, read_explainer_config
    from .sanity import cascading_randomization, ptame_factory, randomization_stages, write_sanity_table
    from .training import training_recipe
    from .images import list_images, load_image

    names = _method_names(args.methods)
    if "ptame" in names and not args.train_data:
        raise ValueError("method 'ptame' retrains its head on every randomised backbone: pass --train-data")
    device = _device(args.device)
    cfg = read_explainer_config(args.explainer)
    backbone = network_from_config(cfg, "backbone", device)
    auxiliary = network_from_config(cfg, "auxiliary", device)
    transform = backbone.preprocessing.eval_transform()
    images = torch.stack([transform(load_image(f)) for f in list_images(args.data)[: args.images]]).to(device)
    stages = randomization_stages(backbone.model)
    if 0 < args.max_stages < len(stages):
        stages = stages[: args.max_stages - 1] + [[n for s in stages[args.max_stages - 1 :] for n in s]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    factories = {}
    for n in names:
        if n == "ptame":
            recipe = training_recipe(cfg) | ({} if args.lr is None else {"lr": args.lr})
            factories[n] = ptame_factory(auxiliary.name, list_images(args.train_data), out / "ptame-heads",
                                         args.ptame_steps, args.ptame_batch_size, seed=args.seed, **recipe)
        else:
            factories[n] = lambda bb, k, n=n: build_method(n, bb, auxiliary=auxiliary, seed=args.seed)
    rows = cascading_randomization(backbone, factories, images, stages, seed=args.seed)
    (out / "sanity.json").write_text(json.dumps(rows, indent=1))
    write_sanity_table(rows, out / "sanity.md")
    print((out / "sanity.md").read_text(), end="")
    print(f"wrote {out / 'sanity.md'} and {out / 'sanity.json'}")
    return 0


COMMANDS = {"train": _cmd_train, "explain": _cmd_explain, "info": _cmd_info, "demo": _cmd_demo, "split": _cmd_split,
            "evaluate": _cmd_evaluate, "sanity": _cmd_sanity}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glancemap", description="Explain image classifiers in one forward pass (P-TAME).")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a Python module first (e.g. one that calls glancemap.register_classifier)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_explain, _add_info, _add_demo, _add_split, _add_evaluate, _add_sanity):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    # one plain line per warning (a skipped file, say), not the source line that raised it
    warnings.formatwarning = lambda message, category, *_a, **_k: f"glancemap: warning: {message}\n"
    try:
        if args.imports:
            sys.path.insert(0, ".")  # modules next to the user's working directory
            for module in args.imports:
                importlib.import_module(module)
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"glancemap {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
