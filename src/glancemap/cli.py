"""The ``glancemap`` command: train, explain, evaluate, sanity, ship, export, info, demo.

It parses arguments and calls the library; what a command does lives in the
module it calls (training, explain_files, evaluation, sanity, explainer).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .checks import COUNT, COUNT_OR_ZERO, FRACTION, POSITIVE, SIDE, Range


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def _checked(type_: Callable[[str], Any], rng: Range) -> Callable[[str], Any]:
    """An argparse type that refuses values outside ``rng`` at parse time, saying the allowed range."""

    def convert(text: str) -> Any:
        try:
            value = type_(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rng.describe()}, got {text!r}") from None
        if not rng.allows(value):
            raise argparse.ArgumentTypeError(f"must be {rng.describe()}, got {text}")
        return value

    return convert


def _fractions(text: str) -> tuple[float, ...]:
    """``"0.1,0.3"`` -> ``(0.1, 0.3)``, each strictly inside (0, 1)."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not all(FRACTION.allows(v) for v in values):
        raise argparse.ArgumentTypeError(f"each must be {FRACTION.describe()}, got {text}")
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field_flags(p: argparse.ArgumentParser, cls: type, keep_default: bool) -> list[str]:
    """One flag per field of ``cls`` whose metadata has a help text; returns the field names.

    ``keep_default``: the flag's default is the field's (so it lives in one place); otherwise
    None, meaning "not given".
    """
    names = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        meta = dict(f.metadata)
        meta.pop("parse", None)
        rng = meta.pop("range", None)
        kwargs: dict[str, Any] = {"help": meta.pop("help")} | meta
        if keep_default:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kwargs["default"] = default
            if default not in (None, []) and "choices" not in kwargs:
                kwargs["help"] += f" (default: {default})"
        else:
            kwargs["default"] = None
        kwargs.setdefault("type", type(f.default) if isinstance(f.default, (int, float)) else None)
        if kwargs["type"] is None:
            kwargs.pop("type")
        elif rng is not None:
            kwargs["type"] = _checked(kwargs["type"], rng)
        p.add_argument(_flag(f.name), **kwargs)
        names.append(f.name)
    return names


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .explainer import LossWeights
    from .training import TrainConfig

    p = sub.add_parser("train", help="train an explainer head on image folders")
    p.add_argument("data", nargs="+", help="image files, folders (recursive) or .txt lists of paths")
    p.add_argument("--out", required=True, help="output folder (checkpoint, log, explainer/)")
    p.set_defaults(config_fields=_add_field_flags(p, TrainConfig, keep_default=True))
    loss = p.add_argument_group("loss weights (default: the preset's)")
    p.set_defaults(loss_fields=_add_field_flags(loss, LossWeights, keep_default=False))
    p.add_argument(
        "--experimental",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="EXPERIMENTAL loss options, measured no gain so far (docs/experiments.md): "
        + ", ".join(LossWeights.EXPERIMENTAL)
        + "; e.g. rank_destroy=3 rank_fractions=0.2,0.4",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    again.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--no-progress", action="store_true")


def _experimental(items: Sequence[str]) -> dict[str, Any]:
    from .explainer import LossWeights

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in LossWeights.EXPERIMENTAL or not value:
            raise ValueError(
                f"--experimental wants KEY=VALUE with KEY among {', '.join(LossWeights.EXPERIMENTAL)}, got {item!r}"
            )
        numbers = [float(v) for v in value.split(",")]
        out[key] = numbers if len(numbers) > 1 else numbers[0]
    return out


def train_config(args: argparse.Namespace):
    """The :class:`~glancemap.training.TrainConfig` that parsed ``train`` arguments describe."""
    from .training import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    for name in args.config_fields:
        value = getattr(args, name)
        parse = fields[name].metadata.get("parse")
        values[name] = parse(value) if parse else value
    loss = {k: getattr(args, k) for k in args.loss_fields if getattr(args, k) is not None}
    loss |= _experimental(args.experimental)
    return TrainConfig(
        data=list(args.data), out=args.out, loss=loss, command="glancemap " + " ".join(sys.argv[1:]), **values
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    config = train_config(args)
    t0 = time.time()
    explainer = train(config, resume=args.resume, progress_bar=not args.no_progress, overwrite=args.overwrite)
    info = explainer.training_info
    print(
        f"trained {info['steps']} steps on {info['images']} images in {time.time() - t0:.0f}s "
        f"(skipped {info['skipped_files']} bad files); explainer saved to {Path(args.out) / 'explainer'}"
    )
    return 0


def _add_aux_sides_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--aux-sides",
        type=_checked(int, SIDE),
        nargs="+",
        default=None,
        metavar="SIDE",
        help="run the auxiliary at these sides instead of the explainer's, one pass each, the first in place of "
        "its training side: e.g. 224 for the paper's single pass, or a smaller side for a cheaper map",
    )


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="write overlays and raw maps for images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument(
        "--explainer", default="default", help="explainer folder, or a shipped name (default, efficientnet_lite1)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--top-k", type=_checked(int, COUNT), default=3, help="classes explained per image")
    p.add_argument("--batch-size", type=_checked(int, COUNT), default=16)
    p.add_argument("--device", default="auto")
    _add_aux_sides_option(p)
    _add_display_options(p)


def _add_display_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--negative-slope",
        type=_checked(float, Range(above=0, maximum=1)),
        default=None,
        help="multiply the maps by this slope in (0, 1] where a pixel is scored against the class (see "
        "--negative-at), e.g. 0.05 (shared heads; default: the explainer's own, 1.0 = plain min-max)",
    )
    p.add_argument(
        "--negative-at",
        choices=("readout", "zero"),  # glancemap.explainer.NEGATIVE_AT, without importing torch to parse
        default=None,
        help="readout: where the head's frozen readout scores the pixel against the class; zero: where the "
        "head's logits less its offset are below zero, through a leaky ReLU before the min-max (default: the "
        "explainer's own)",
    )
    gate = p.add_mutually_exclusive_group()
    gate.add_argument(
        "--gate-margin",
        type=_checked(float, Range(minimum=0)),
        default=None,
        help="darken the pixels the head's frozen readout gives to other classes: each map times min(1, "
        "e^M p(class|pixel) / max p), e.g. 4 (shared heads; default: the explainer's own)",
    )
    gate.add_argument("--no-gate", action="store_true", help="show the maps without the class gate")


def _display_settings(args: argparse.Namespace) -> dict:
    """The display options given on the command line, as explainer config fields."""
    given = {"negative_slope": args.negative_slope, "negative_at": args.negative_at, "gate_margin": args.gate_margin}
    settings = {k: v for k, v in given.items() if v is not None}
    return settings | ({"gate_margin": None} if args.no_gate else {})


def _with_display(explainer, args: argparse.Namespace):
    """``explainer`` shown as the command line's display options say (unchanged where none is given)."""
    settings = _display_settings(args)
    if "negative_slope" in settings or "negative_at" in settings:
        explainer = explainer.with_negative_slope(args.negative_slope, args.negative_at)
    return explainer.with_gate(settings["gate_margin"]) if "gate_margin" in settings else explainer


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain_files import explain_files
    from .explainer import load_explainer
    from .images import list_images

    explainer = load_explainer(args.explainer, device=_device(args.device))
    if args.aux_sides:
        explainer = explainer.with_aux_sizes(args.aux_sides)
    explainer = _with_display(explainer, args)
    counts = explain_files(list_images(args.inputs), explainer, Path(args.out), args.top_k, args.batch_size)
    print(f"explained {counts['explained']} image(s) into {args.out}; skipped {counts['skipped']} unreadable file(s)")
    return 0 if counts["explained"] else 1


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices, classifiers, methods and an explainer's configuration")
    p.add_argument("--explainer", default="default")


def _cmd_info(args: argparse.Namespace) -> int:
    from .explainer import read_explainer_config
    from .methods import METHODS
    from .models import available_classifiers
    from .version import __version__

    cfg = read_explainer_config(args.explainer)  # a bad folder is refused before anything is printed
    print(
        f"glancemap {__version__}, torch {torch.__version__}, "
        f"device {'cuda (' + torch.cuda.get_device_name() + ')' if torch.cuda.is_available() else 'cpu'}"
    )
    print("classifiers:")
    for name, what in available_classifiers().items():
        print(f"  {name:22s} {what}")
    print("methods:")
    for name, spec in METHODS.items():
        print(f"  {name:14s} {spec.label:20s} {spec.summary}")
    print(f"explainer {args.explainer}:")
    print(
        f"  backbone   {cfg['backbone']['name']} ({cfg['backbone']['source']}), input {cfg['input_size']}, "
        f"{cfg['num_classes']} classes"
    )
    print(f"  auxiliary  {cfg['auxiliary']['name']} at {cfg['aux_input_size']}, layers {cfg['layers']}")
    if cfg.get("extra_aux_sizes"):
        print(f"             and at {cfg['extra_aux_sizes']} when explaining (maps averaged)")
    readout = {
        "distilled": ", read through a readout distilled from the backbone",
        "auxiliary": (", read through the auxiliary's own classifier"),
    }.get(cfg.get("readout") or "", "")
    print(f"  head       {cfg.get('head', 'per-class')}{readout}")
    if cfg.get("negative_slope", 1.0) != 1.0:
        at = {"readout": "where its readout scores them against the class", "zero": "below the head's zero"}
        print(f"  display    pixels {at[cfg.get('negative_at', 'readout')]} dimmed to {cfg['negative_slope']}")
    if cfg.get("gate_margin") is not None:
        print(f"  gate       pixels its readout gives to other classes darkened (margin {cfg['gate_margin']})")
    print(f"  made with  glancemap {cfg['glancemap_version']}")
    if cfg.get("training"):
        print("  training   " + json.dumps({k: v for k, v in cfg["training"].items() if k != "final_terms"}))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="explain scikit-image's sample photos with the shipped explainer")
    p.add_argument("--out", default="demo")
    p.add_argument("--top-k", type=_checked(int, COUNT), default=3)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .explain_files import demo_files, explain_files
    from .explainer import load_explainer

    out = Path(args.out)
    files = demo_files(out / "inputs")
    counts = explain_files(files, load_explainer("default"), out, args.top_k, batch_size=len(files))
    summary = json.loads((out / "summary.json").read_text())["explained"]
    for f, entry in summary.items():
        print(
            f"{Path(f).name:24s} -> "
            + ", ".join(f"{n.split(',')[0]} ({s:.2f})" for n, s in zip(entry["names"], entry["scores"]))
        )
    print(f"wrote {counts['explained']} overlay(s) and .npy maps to {out}/")
    return 0


def _add_ship(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ship", help="write a trained explainer in the shipped form (head stored as float16)")
    p.add_argument("explainer", help="a trained explainer folder (e.g. runs/default/explainer)")
    p.add_argument("--out", required=True, help="folder to write (e.g. src/glancemap/weights/default)")
    _add_display_options(p)


def _cmd_ship(args: argparse.Namespace) -> int:
    from .explainer import ship_explainer

    out = ship_explainer(args.explainer, args.out, display=_display_settings(args))
    print(f"wrote {out}/config.json and {out}/head.safetensors (float16)")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained explainer as one ONNX file (ONNX Runtime, TensorRT, phones)")
    p.add_argument("explainer", help="explainer folder, or a shipped name (default, efficientnet_lite1)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--all-maps",
        action="store_true",
        help="output every class's map at the head's resolution (B,K,h,w) instead of the maps of given classes",
    )
    _add_aux_sides_option(p)


def _cmd_export(args: argparse.Namespace) -> int:
    from .explainer import load_explainer
    from .explainer.onnx import export_onnx

    explainer = load_explainer(args.explainer)
    if args.aux_sides:
        explainer = explainer.with_aux_sizes(args.aux_sides)
    out = export_onnx(explainer, args.out, "all" if args.all_maps else "maps")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _pairs(items: Sequence[str], what: str, number: bool = False) -> dict[str, Any]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}`` (ints with ``number``), refusing malformed items."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value or (number and not (value.isdigit() and int(value) >= 1)):
            wanted = "METHOD=N with N an integer >= 1" if number else "NAME=PATH"
            raise ValueError(f"{what} wants {wanted}, got {item!r}")
        out[key] = int(value) if number else value
    return out


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .evaluation import DEFAULT_METHODS, MetricConfig
    from .methods import METHODS

    d = MetricConfig()
    p = sub.add_parser("evaluate", help="faithfulness table (AD/IC, ROAD, deletion/insertion, cost) for many methods")
    p.add_argument("--data", nargs="+", required=True, help="image files, folders or .txt lists (e.g. splits/dev.txt)")
    p.add_argument(
        "--explainer",
        default="default",
        help="P-TAME explainer folder, or a shipped name (default, efficientnet_lite1)",
    )
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another explainer for the same backbone, scored as method ptame-NAME (repeatable)",
    )
    p.add_argument("--backbone", default=None, help="classifier to explain (default: the explainer's)")
    p.add_argument("--backbone-weights", default=None, help="local weights file, or 'random'")
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, or 'all': {','.join(METHODS)} (default: {DEFAULT_METHODS}, less those that cannot "
        "run on this backbone)",
    )
    p.add_argument("--out", default=None, help="results folder (default: runs/eval-<backbone>)")
    p.add_argument("--limit", type=_checked(int, COUNT), default=None, help="first N images only")
    p.add_argument(
        "--limit-for",
        action="append",
        default=[],
        metavar="METHOD=N",
        help="first N images (with --grid: grids) only for one method (repeatable), e.g. scorecam=10 for costly "
        "methods",
    )
    p.add_argument("--batch-size", type=_checked(int, COUNT), default=16)
    p.add_argument(
        "--cam-batch-size", type=_checked(int, COUNT), default=32, help="inner batch of Score-CAM/Ablation-CAM/RISE"
    )
    p.add_argument("--rise-masks", type=_checked(int, COUNT), default=4000)
    p.add_argument("--opticam-steps", type=_checked(int, COUNT), default=100, help="Adam iterations per Opti-CAM map")
    _add_aux_sides_option(p)
    p.add_argument("--imputation", default=d.imputation, choices=["telea", "linear"], help="ROAD fill")
    p.add_argument(
        "--road-fractions",
        type=_fractions,
        default=d.road_fractions,
        help="comma-separated fractions removed, each in (0, 1)",
    )
    p.add_argument(
        "--deletion-steps",
        type=_checked(int, COUNT_OR_ZERO),
        default=d.deletion_steps,
        help="0 skips deletion/insertion",
    )
    p.add_argument(
        "--grid",
        type=_checked(int, Range(minimum=2, maximum=8, integer=True)),
        default=None,
        metavar="N",
        help="play the grid pointing game instead: NxN images of different classes tiled into one, each cell's "
        "class explained (mass share, top-area share, pointing hit); results in <out>/gridN",
    )
    p.add_argument(
        "--grid-threshold",
        type=_checked(float, FRACTION),
        default=0.5,
        help="softmax an image's own top-1 needs to enter a grid",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import GridConfig, MetricConfig, evaluate

    metrics = MetricConfig(
        road_fractions=args.road_fractions,
        imputation=args.imputation,
        deletion_steps=args.deletion_steps,
    )
    out = evaluate(
        args.data,
        out=args.out,
        methods=args.methods,
        explainer=args.explainer,
        also=_pairs(args.also, "--also"),
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        limit=args.limit,
        limit_for=_pairs(args.limit_for, "--limit-for", number=True),
        batch_size=args.batch_size,
        aux_sides=args.aux_sides,
        metrics=metrics,
        options={
            "cam_batch_size": args.cam_batch_size,
            "rise_masks": args.rise_masks,
            "opticam_steps": args.opticam_steps,
        },
        device=_device(args.device),
        progress=not args.no_progress,
        grid=None if args.grid is None else GridConfig(n=args.grid, threshold=args.grid_threshold),
    )
    print((out / "table.md").read_text(), end="")
    print(f"wrote {out / 'table.md'} and {out / 'table.csv'}")
    if (out / "paired.md").exists():
        print((out / "paired.md").read_text(), end="")
        print(f"wrote {out / 'paired.md'} (per-image differences on the images both methods scored)")
    return 0


def _add_sanity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sanity", help="model-randomisation check: do maps change when the backbone is randomised?")
    p.add_argument("--data", nargs="+", required=True, help="images to compare maps on (e.g. splits/dev.txt)")
    p.add_argument(
        "--train-data",
        nargs="+",
        default=None,
        help="images for P-TAME's retraining on each randomised backbone (needed for 'ptame')",
    )
    p.add_argument("--explainer", default="default", help="names the backbone and auxiliary")
    p.add_argument("--methods", default="ptame,gradcam,gradcam++,auxcam")
    p.add_argument("--images", type=_checked(int, COUNT), default=16, help="first N images of --data")
    p.add_argument(
        "--max-stages",
        type=_checked(int, COUNT_OR_ZERO),
        default=6,
        help="randomise block by block for this many stages, the last one taking all the rest",
    )
    p.add_argument(
        "--ptame-steps",
        type=_checked(int, COUNT),
        default=60,
        help="head training steps per backbone, stage 0 included",
    )
    p.add_argument("--ptame-batch-size", type=_checked(int, COUNT), default=16)
    p.add_argument(
        "--lr",
        type=_checked(float, POSITIVE),
        default=None,
        help="P-TAME retraining learning rate (default: the explainer's own; its head, loss and init "
        "are always the explainer's own)",
    )
    p.add_argument("--out", default="runs/sanity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _cmd_sanity(args: argparse.Namespace) -> int:
    from .sanity import run_sanity

    out = Path(args.out)
    run_sanity(
        args.data,
        out,
        methods=args.methods,
        explainer=args.explainer,
        train_data=args.train_data,
        images=args.images,
        max_stages=args.max_stages,
        ptame_steps=args.ptame_steps,
        ptame_batch_size=args.ptame_batch_size,
        lr=args.lr,
        seed=args.seed,
        device=_device(args.device),
    )
    print((out / "sanity.md").read_text(), end="")
    print(f"wrote {out / 'sanity.md'} and {out / 'sanity.json'}")
    return 0


COMMANDS = {
    "train": (_add_train, _cmd_train),
    "explain": (_add_explain, _cmd_explain),
    "evaluate": (_add_evaluate, _cmd_evaluate),
    "sanity": (_add_sanity, _cmd_sanity),
    "ship": (_add_ship, _cmd_ship),
    "export": (_add_export, _cmd_export),
    "info": (_add_info, _cmd_info),
    "demo": (_add_demo, _cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glancemap", description="Explain image classifiers in one forward pass (P-TAME)."
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a Python module first (e.g. one that calls glancemap.register_classifier)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
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
        return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        print(f"glancemap {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a message, not a traceback; --debug shows the traceback
        if args.debug:
            raise
        expected = isinstance(exc, (ValueError, OSError, ImportError, RuntimeError))
        what = str(exc) if expected else f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        print(f"glancemap {args.command}: error: {what}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
