"""Explainer cost versus the backbone, measured side by side in one run.

Prints, on the same batch: explanations per second (maps for given classes,
and maps for the backbone's own top-1, which adds one backbone pass), backbone
forward passes per second, their ratios, training images per second and peak
memory. Timings alternate between the contenders so drift hits all alike.

    python scripts/benchmark.py [--batch-size 16] [--repeats 5] [--device cpu]
        [--baselines gradcam,scorecam --baseline-images 2]

``--baselines`` also times those methods (``glancemap evaluate``'s names) once each
on the first ``--baseline-images`` images of the batch, in the same run, so the
cost ratios against them come from one machine state.

``--layouts`` also times the backbone, the explainer and a training step with
the networks fed images in the plain (contiguous) memory layout, alternating
with the channels-last layout that ``load_classifier``'s networks use, and
prints the ratios.

``--onnx`` also times the explainer (and its one pass) and the backbone exported
to ONNX and run by ONNX Runtime on the same batch, and prints the cost of an
explanation in backbone forwards within that runtime, beside the auxiliary's
own pass (its classifier at its first side, no head): the difference between
that and the one pass is what the head and the resizing cost. ``--one-pass-sides
192 160`` adds exported one-pass explainers at those auxiliary sides.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glancemap import load_explainer  # noqa: E402
from glancemap.explainer import PTameLoss  # noqa: E402
from glancemap.methods import MethodContext, create_method  # noqa: E402
from glancemap.training import TrainConfig, training_step  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _peak_mb(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA, max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process peak RSS)"


def set_layout(explainer, channels_last: bool) -> None:
    """Feeds the explainer's frozen networks (backbone, auxiliary) channels-last images, or plain ones."""
    explainer.backbone.channels_last = channels_last
    explainer.auxiliary.channels_last = channels_last


def time_by_layout(
    explainer, fns: dict, layouts: dict[str, bool], repeats: int, device: torch.device
) -> dict[tuple[str, str], float]:
    """Median seconds of each ``fns`` entry in each layout, keyed ``(name, layout)``: one warm-up call
    each, then ``repeats`` rounds in which the layouts alternate, so drift hits all alike."""
    times: dict[tuple[str, str], list[float]] = {}
    for channels_last in layouts.values():
        set_layout(explainer, channels_last)
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for layout, channels_last in layouts.items():
            set_layout(explainer, channels_last)
            for name, fn in fns.items():
                times.setdefault((name, layout), []).append(_time(fn, device))
    set_layout(explainer, True)
    return {k: statistics.median(v) for k, v in times.items()}


def onnx_contenders(
    explainer, one_pass, images: torch.Tensor, targets: torch.Tensor, sides: Sequence[int] = ()
) -> dict:
    """The backbone and the explainer (its one pass, and one pass at each of ``sides``) exported to
    ONNX, timed in ONNX Runtime."""
    import onnxruntime

    from glancemap.explainer.onnx import export_onnx
    from glancemap.models import export_classifier_onnx

    folder = Path(tempfile.mkdtemp(prefix="glancemap-bench-"))
    backbone_file = export_classifier_onnx(explainer.backbone, folder / "backbone.onnx")
    # the session itself, not the onnx: loader: the backbone's time without the numpy round trip
    session = onnxruntime.InferenceSession(str(backbone_file), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.cpu().numpy()}

    def exported(made, name: str):
        return load_explainer(export_onnx(made, folder / name), backbone=explainer.backbone)

    maps = exported(explainer, "maps.onnx")
    # the auxiliary alone at its first side (its classifier, no head): what a one pass costs before the head
    aux_file = export_classifier_onnx(explainer.auxiliary, folder / "auxiliary.onnx")
    aux_session = onnxruntime.InferenceSession(str(aux_file), providers=["CPUExecutionProvider"])
    aux_images = torch.rand(images.shape[0], 3, *explainer.aux_sizes[0]).numpy()
    aux_feed = {aux_session.get_inputs()[0].name: aux_images}
    out = {
        "onnxruntime: backbone forward": lambda: session.run(None, feed),
        "onnxruntime: auxiliary forward": lambda: aux_session.run(None, aux_feed),
        "onnxruntime: explain (given classes)": lambda: maps(images.cpu(), targets.cpu()),
    }
    if explainer.extra_aux_sizes:
        single = exported(one_pass, "one_pass.onnx")
        out["onnxruntime: explain, one pass (given)"] = lambda: single(images.cpu(), targets.cpu())
    for side in sides:
        cheap = exported(explainer.with_aux_sizes([side]), f"one_pass_{side}.onnx")
        out[f"onnxruntime: explain, one pass at {side} px (given)"] = lambda m=cheap: m(images.cpu(), targets.cpu())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baselines", default="", help="comma-separated methods to time beside it, e.g. gradcam,scorecam")
    ap.add_argument("--baseline-images", type=int, default=2)
    ap.add_argument(
        "--onnx",
        action="store_true",
        help="also time the explainer and the backbone exported to ONNX and run by ONNX Runtime, side by side",
    )
    ap.add_argument(
        "--one-pass-sides",
        type=int,
        nargs="*",
        default=[],
        metavar="SIDE",
        help="with --onnx, also time one auxiliary pass at each of these sides (cheaper maps)",
    )
    ap.add_argument(
        "--layouts",
        action="store_true",
        help="also time everything with the networks in the contiguous layout, side by side",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    explainer = load_explainer(args.explainer, device=device)
    backbone = explainer.backbone
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, *explainer.input_size, device=device)
    with torch.no_grad():
        targets = backbone(images).argmax(1)

    one_pass = explainer.with_extra_aux_sizes([])
    contenders = {
        "backbone forward": lambda: backbone(images),
        "explain (given classes)": lambda: explainer(images, targets),
        "explain (backbone top-1)": lambda: explainer(images),
    }
    if explainer.extra_aux_sizes:  # multi-scale explainer: its single-pass cost beside it
        contenders["explain, one pass (given)"] = lambda: one_pass(images, targets)
    if args.onnx:
        contenders |= onnx_contenders(explainer, one_pass, images, targets, args.one_pass_sides)
    layouts = {"channels-last": True}
    if args.layouts:
        layouts["contiguous"] = False
    with torch.no_grad():
        med = time_by_layout(explainer, contenders, layouts, args.repeats, device)
    inference_peak = _peak_mb(device)

    cfg = TrainConfig(data=[], out="")
    loss_fn = PTameLoss(cfg.loss_weights())
    opt = torch.optim.AdamW(explainer.head.parameters(), lr=1e-6, amsgrad=True)

    def step():
        explainer.train()
        loss, _ = training_step(explainer, explainer.head, images, loss_fn)
        opt.zero_grad()
        loss.backward()
        opt.step()

    med_train = time_by_layout(explainer, {"training": step}, layouts, args.train_steps, device)

    b = args.batch_size

    def label(name: str, layout: str) -> str:
        return f"{name} [{layout}]" if args.layouts else name

    print(
        f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} "
        f"{'' if device.type == 'cuda' else 'cores, '}{torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    print(
        f"backbone {backbone.name} at {explainer.input_size}, auxiliary {explainer.auxiliary.name} at "
        f"{explainer.aux_sizes}, batch {b}, median of {args.repeats}"
    )
    width = max(26, *(len(label(*k)) for k in med))
    for key, t in med.items():
        print(f"  {label(*key):{width}s} {b / t:8.1f} images/s   ({1000 * t / b:6.1f} ms/image)")
    m = {name: med[(name, "channels-last")] for name in contenders}  # the shipped layout
    print(
        f"  ratio explain(given)/backbone forward: {m['explain (given classes)'] / m['backbone forward']:.2f} "
        "(cost of one explanation in backbone forwards)"
    )
    print(f"  ratio explain(top-1)/backbone forward: {m['explain (backbone top-1)'] / m['backbone forward']:.2f}")
    if "explain, one pass (given)" in m:
        print(
            f"  ratio explain one pass(given)/backbone forward: "
            f"{m['explain, one pass (given)'] / m['backbone forward']:.2f}"
        )
    if args.onnx:
        ort = "onnxruntime: "
        names = ["explain (given classes)", "explain, one pass (given)", "auxiliary forward"]
        names += [f"explain, one pass at {side} px (given)" for side in args.one_pass_sides]
        for name in names:
            if ort + name in m:
                ratio = m[ort + name] / m[ort + "backbone forward"]
                print(f"  ratio {ort}{name}/backbone forward: {ratio:.2f} (both in ONNX Runtime)")
    given = m["explain (given classes)"] / b
    for name in filter(None, args.baselines.split(",")):
        method = create_method(name, MethodContext(backbone, explainer))
        n = min(args.baseline_images, b)
        seconds = _time(lambda method=method, n=n: method(images[:n], targets[:n]), device) / n
        one = m.get("explain, one pass (given)")
        print(
            f"  {name:{width}s} {seconds:8.2f} s/map ({n} images, once)   "
            f"ratio to explain(given): {seconds / given:,.0f}x"
            + (f", to one pass: {seconds / (one / b):,.0f}x" if one else "")
        )
    for key, t in med_train.items():
        print(f"  {label(*key):{width}s} {b / t:8.1f} images/s")
    if args.layouts:
        med |= med_train
        for name in [*contenders, "training"]:
            ratio = med[(name, "contiguous")] / med[(name, "channels-last")]
            print(f"  layout ratio, {name}: contiguous / channels-last time = {ratio:.2f}")
    print(f"  peak memory: inference {inference_peak}; after training {_peak_mb(device)}")


if __name__ == "__main__":
    main()
