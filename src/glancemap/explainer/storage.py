"""Explainer folders on disk: finding, reading, checking, loading and shipping them.

A folder holds ``config.json`` (what the explainer explains and how it was
trained) and ``head.safetensors`` (the trained head; nothing is unpickled).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..models import Classifier
from .explainer import (
    CONFIG_NAME,
    DEFAULT_EXPLAINER_DIR,
    FORMAT,
    LEGACY_FORMATS,
    NEGATIVE_AT,
    WEIGHTS_NAME,
    PTameExplainer,
    check_gate_margin,
    check_slope,
    write_explainer_folder,
)
from .networks import ExplainerMismatchError, _check_model, network_from_config


def shipped_explainers() -> list[str]:
    """Names of the explainers that ship with glancemap (``default`` explains efficientnet_lite2)."""
    root = DEFAULT_EXPLAINER_DIR.parent
    return sorted(d.name for d in root.iterdir() if (d / CONFIG_NAME).is_file())


def explainer_dir(path: str | os.PathLike) -> Path:
    """The folder of a saved explainer: a folder, one of its two files, or a shipped name
    (``"default"`` always; ``"efficientnet_lite1"`` unless a local path has that name)."""
    if str(path) == "default":
        return DEFAULT_EXPLAINER_DIR
    p = Path(path)
    if not p.exists() and str(path) in shipped_explainers():
        return DEFAULT_EXPLAINER_DIR.parent / str(path)
    if p.suffix == ".onnx":  # an exported explainer is one file
        return p
    return p.parent if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME) else p


def read_explainer_config(path: str | os.PathLike) -> dict[str, Any]:
    directory = explainer_dir(path)
    if directory.suffix == ".onnx" and directory.is_file():
        from .onnx import onnx_config

        return onnx_config(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a glancemap explainer (no {CONFIG_NAME}); "
            "train one with 'glancemap train' or use 'default'"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{cfg_path} is not UTF-8 text, so not an explainer config") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an explainer config")
    if cfg.get("format") in LEGACY_FORMATS:
        cfg["format"] = FORMAT
        cfg.setdefault("glancemap_version", cfg.pop("ptame_version", None))
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: unknown format {cfg.get('format')!r} (expected {FORMAT!r})")
    problem = _config_problem(cfg)
    if problem:
        raise ValueError(f"{cfg_path} is not a valid explainer config: {problem}")
    return cfg


def _is_ints(value: Any, n: int | None = None) -> bool:
    return isinstance(value, list) and (n is None or len(value) == n) and all(isinstance(v, int) for v in value)


def _passes(check, value: Any) -> bool:
    """Whether the explainer's own ``check`` accepts ``value``."""
    try:
        check(value)
    except ValueError:
        return False
    return True


def _config_problem(cfg: dict) -> str | None:
    """What is wrong with a parsed config's shape (None if nothing)."""
    for role in ("backbone", "auxiliary"):
        spec = cfg.get(role)
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return f"'{role}' must be an object with a 'name'"
        if not isinstance(spec.get("num_classes"), int):
            return f"'{role}.num_classes' must be an integer"
    checks = {
        "layers": isinstance(cfg.get("layers"), list) and all(isinstance(v, str) for v in cfg.get("layers", [])),
        "aux_input_size": _is_ints(cfg.get("aux_input_size"), 2),
        "input_size": _is_ints(cfg.get("input_size"), 2),
        "num_classes": isinstance(cfg.get("num_classes"), int) and cfg.get("num_classes", 0) > 0,
        "feature_channels": _is_ints(cfg.get("feature_channels")),
        "extra_aux_sizes": all(_is_ints(s, 2) for s in cfg.get("extra_aux_sizes", [])),
        "class_names": isinstance(cfg.get("class_names", []), list),
        "training": isinstance(cfg.get("training", {}), dict),
        "negative_slope": _passes(check_slope, cfg.get("negative_slope", 1.0)),
        "gate_margin": _passes(check_gate_margin, cfg.get("gate_margin")),
        "negative_at": cfg.get("negative_at", "readout") in NEGATIVE_AT,
    }
    bad = [k for k, ok in checks.items() if not ok]
    return f"missing or malformed {', '.join(bad)}" if bad else None


def load_explainer(
    path: str | os.PathLike = "default",
    backbone: Classifier | None = None,
    auxiliary: Classifier | None = None,
    device: str | torch.device | None = None,
) -> PTameExplainer:
    """Loads a saved explainer; ``"default"`` is the one shipped with glancemap, and a ``.onnx``
    file exported with :func:`~glancemap.explainer.onnx.export_onnx` gives an ``OnnxExplainer``.

    The backbone and auxiliary are rebuilt by name unless given; given ones
    must match the names and class counts the explainer was trained with.
    """
    directory = explainer_dir(path)
    if directory.suffix == ".onnx" and directory.is_file():
        from .onnx import OnnxExplainer

        return OnnxExplainer(directory, backbone=backbone)  # type: ignore[return-value]
    cfg = read_explainer_config(directory)

    def resolve(role: str, given: Classifier | None) -> Classifier:
        if given is None:
            given = network_from_config(cfg, role)
            names = cfg.get("class_names")
            if role == "backbone" and names and len(names) == given.num_classes:
                given.class_names = list(names)  # the names it was trained with (a file, ImageFolder folders)
        _check_model(role, cfg[role], given)
        return given

    bb = resolve("backbone", backbone)
    if bb.num_classes != cfg["num_classes"]:
        raise ExplainerMismatchError(
            f"this explainer has {cfg['num_classes']} class maps; backbone {bb.name!r} has {bb.num_classes} classes"
        )
    aux = resolve("auxiliary", auxiliary)
    if device is not None:
        bb.to(device)
        aux.to(device)
    explainer = PTameExplainer(
        bb,
        aux,
        cfg["layers"],
        tuple(cfg["aux_input_size"]),
        head_bias=bool(cfg.get("head_bias", False)),
        head=cfg.get("head", "per-class"),
        extra_aux_sizes=[tuple(s) for s in cfg.get("extra_aux_sizes", [])],
        # a distilled readout is stored with the head: a placeholder of its shape, filled from the file below
        readout=torch.zeros(cfg["num_classes"], cfg["feature_channels"][-1])
        if cfg.get("head") == "shared" and cfg.get("readout") == "distilled"
        else None,
        negative_slope=cfg.get("negative_slope", 1.0),  # explainers saved before the setting: plain min-max
        negative_at=cfg.get("negative_at", "readout"),  # saved before the choice: the readout's sign
        gate_margin=cfg.get("gate_margin"),  # saved before the gate: none
    )
    if explainer.head.channels != list(cfg["feature_channels"]):
        raise ExplainerMismatchError(
            f"auxiliary layers give channels {explainer.head.channels}, explainer expects {cfg['feature_channels']}"
        )
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
    except Exception as exc:
        raise ValueError(f"cannot read {directory / WEIGHTS_NAME}: {exc}") from exc
    expected = explainer.head.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ExplainerMismatchError(f"{directory / WEIGHTS_NAME}: missing tensor {key!r}")
        if state[key].shape != value.shape:
            raise ExplainerMismatchError(
                f"{directory / WEIGHTS_NAME}: {key} has shape {tuple(state[key].shape)}, "
                f"the head for {bb.name}/{aux.name} needs {tuple(value.shape)}"
            )
    explainer.head.load_state_dict({k: state[k] for k in expected})
    explainer.training_info = cfg.get("training", {})
    explainer.source_dir = directory  # the folder its head came from (evaluation records the file's hash)
    if device is not None:
        explainer.to(device)
    return explainer.eval()


def ship_explainer(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    display: dict[str, Any] | None = None,
) -> Path:
    """Writes a trained explainer in the form glancemap ships: the same config, the head's floating-point
    tensors stored as ``dtype`` (half the bytes; integer buffers unchanged). Loading casts them back to
    float32, so the maps differ from the source's only by that rounding. ``display`` sets how the shipped
    explainer shows its maps (``{"negative_slope": 0.01, "negative_at": "zero", "gate_margin": 4.0}``)."""
    src, dst = explainer_dir(source), Path(destination)
    cfg = read_explainer_config(src)  # refuse anything that is not an explainer folder
    unknown = sorted(set(display or {}) - {"negative_slope", "negative_at", "gate_margin"})
    if unknown:
        raise ValueError(f"ship sets only negative_slope, negative_at and gate_margin, not {', '.join(unknown)}")
    cfg |= display or {}
    problem = _config_problem(cfg)
    if problem:
        raise ValueError(f"cannot ship {src} with {display}: {problem}")
    try:
        state = load_file(str(src / WEIGHTS_NAME))
    except Exception as exc:
        raise ValueError(f"cannot read {src / WEIGHTS_NAME}: {exc}") from exc
    small = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    return write_explainer_folder(dst, small, cfg)
