"""Classifiers you can only call: a Python function, or an ONNX file run by ONNX Runtime.

Wrapped as a :class:`~glancemap.models.Classifier`, such a backbone serves
everything that needs only its outputs: the metrics, RISE, the auxiliary CAM,
and the trained explainer's maps (which never run the backbone). Methods that
need its layers or gradients (the Grad-CAM family, Opti-CAM) and gradient
training refuse it with a message saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..onnxfile import write_onnx
from .classifier import Classifier, imagenet_class_names


class BlackBox(nn.Module):
    """``fn(images: float32 numpy (B,3,H,W)) -> numpy (B,K)`` as a module; no gradients flow through it.

    ``outputs="probabilities"``: ``fn`` returns class probabilities, passed on as log-probabilities
    (whose softmax gives them back), so every metric sees the same scores either way.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], outputs: str = "logits") -> None:
        super().__init__()
        if outputs not in ("logits", "probabilities"):
            raise ValueError(f"outputs must be 'logits' or 'probabilities', got {outputs!r}")
        self.fn, self.outputs = fn, outputs
        self.calls = 0  # images sent to fn so far: what a paid API or a budget counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        out = np.asarray(self.fn(x.detach().cpu().contiguous().numpy().astype(np.float32)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"the black-box classifier returned shape {out.shape}, expected ({x.shape[0]}, K)")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():  # caught here, not later as a diverged loss or NaN scores that blame the explainer
            raise ValueError(
                f"the black-box classifier returned NaN or infinite {self.outputs} for {int(bad.sum())} of "
                f"{len(out)} images (the first: image {int(bad.argmax())} of the batch)"
            )
        if self.outputs == "probabilities" and (out < 0).any():
            raise ValueError("the black-box classifier returned negative probabilities: pass outputs='logits'?")
        y = torch.from_numpy(out).to(x.device)
        return y.clamp_min(1e-12).log() if self.outputs == "probabilities" else y


def callable_classifier(
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    name: str,
    input_size: tuple[int, int] | int,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    outputs: str = "logits",
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    fingerprint: str | None = None,
) -> Classifier:
    """A :class:`Classifier` around a function you can only call (an HTTP client, a compiled engine).

    ``fn`` receives float32 ``(B,3,H,W)`` images normalized with ``mean``/``std`` (by default plain
    [0,1] RGB) and returns ``(B,K)`` logits or, with ``outputs="probabilities"``, probabilities.
    ``fingerprint`` identifies the model behind it (a version string, a file hash), so explainers
    trained for it refuse another one.
    """
    clf = Classifier(
        BlackBox(fn, outputs),
        name=name,
        input_size=input_size,
        class_names=class_names,
        num_classes=num_classes,
        mean=mean,
        std=std,
        source="black box",
    )
    clf.differentiable = False
    clf.black_box_fingerprint = fingerprint or name
    return clf.freeze()


def onnx_classifier(path: str | os.PathLike, name: str | None = None, outputs: str | None = None) -> Classifier:
    """An ONNX image classifier run by ONNX Runtime: input ``(B,3,H,W)`` with fixed H and W, output
    ``(B,K)``. It takes [0,1] RGB unless the file's metadata gives ``mean`` and ``std`` (JSON lists);
    ``class_names`` (a JSON list) and ``outputs`` (``logits`` or ``probabilities``) may come from the
    metadata too. 1000 classes without names get ImageNet's."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("ONNX backbones need onnxruntime: pip install 'glancemap[onnx]'") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ONNX file: {path}")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValueError(f"cannot read {path} as an ONNX model: {exc}") from exc
    (inp,) = session.get_inputs()
    shape = inp.shape
    if len(shape) != 4 or not all(isinstance(s, int) for s in shape[2:]) or shape[1] not in (3, "3"):
        raise ValueError(f"{path}: its input must be (B,3,H,W) with fixed H and W, got {shape}")
    meta = session.get_modelmeta().custom_metadata_map
    k = session.get_outputs()[0].shape[-1]
    names = json.loads(meta["class_names"]) if "class_names" in meta else None
    if names is None and isinstance(k, int):
        names = imagenet_class_names() if k == 1000 else [f"class {i}" for i in range(k)]
    if names is None:
        raise ValueError(f"{path}: the number of classes is not fixed in the file; add class_names metadata")
    feed = inp.name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return callable_classifier(
        lambda x: session.run(None, {feed: x})[0],
        name=name or f"onnx:{path}",
        input_size=(shape[2], shape[3]),
        class_names=names,
        outputs=outputs or meta.get("outputs", "logits"),
        mean=json.loads(meta.get("mean", "[0, 0, 0]")),
        std=json.loads(meta.get("std", "[1, 1, 1]")),
        fingerprint=digest,
    )


def export_classifier_onnx(classifier: Classifier, path: str | os.PathLike, opset: int = 18) -> Path:
    """Writes ``classifier`` (its normalization included: it takes [0,1] RGB) as an ONNX file that
    :func:`onnx_classifier` loads, dynamic batch, with its class names in the metadata."""
    images = torch.rand(2, 3, *classifier.input_size)
    meta = {"class_names": json.dumps(classifier.class_names), "outputs": "logits"}
    return write_onnx(classifier.cpu(), (images,), path, ["images"], "logits", meta, opset)
