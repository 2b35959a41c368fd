"""A trained explainer as one ONNX file, and that file back behind the method interface.

The file holds the auxiliary network, the head and the map post-processing
(resizing, per-map min-max, the multi-scale average), so explanations run on
ONNX Runtime, TensorRT or a phone, with no PyTorch and no autograd. Two
variants:

- ``"maps"``: inputs ``images`` ``(B,3,H,W)`` float32 in [0,1] at the
  explainer's input size and ``classes`` ``(B,)`` int64; output ``maps``
  ``(B,1,H,W)`` in [0,1], the same as ``PTameExplainer(images, classes)``.
- ``"all"``: input ``images``; output ``maps`` ``(B,K,h,w)``, every class's map
  at the head's resolution, as ``PTameExplainer.all_maps(images, "head")``.

The batch is dynamic. The explainer's config (backbone, classes, training) is
stored in the file's metadata, so the file alone says what it explains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..methods.base import Explainer, Targets, check_images
from ..onnxfile import write_onnx
from .explainer import PTameExplainer, check_sizes
from .networks import _check_model, network_from_config

ONNX_FORMAT = "glancemap-onnx/1"
VARIANTS = ("maps", "all")


class _MapsGraph(nn.Module):
    def __init__(self, explainer: PTameExplainer) -> None:
        super().__init__()
        self.explainer = explainer

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        ex = self.explainer
        return ex.multiscale_maps(images, images.shape[-2:], lambda f: ex.map_logits(f, classes, per_sample=True))


class _AllMapsGraph(nn.Module):
    def __init__(self, explainer: PTameExplainer) -> None:
        super().__init__()
        self.explainer = explainer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ex = self.explainer
        return ex.multiscale_maps(images, ex.features.feature_shapes()[0][1:], ex.map_logits)


def export_onnx(explainer: PTameExplainer, path: str | os.PathLike, variant: str = "maps", opset: int = 18) -> Path:
    """Writes ``explainer`` as one ONNX file (see the module's docstring for the two variants)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    explainer = explainer.to("cpu").eval()
    images = torch.rand(2, 3, *explainer.input_size)
    if variant == "maps":
        graph: nn.Module = _MapsGraph(explainer)
        args: tuple = (images, torch.zeros(2, dtype=torch.long))
        names = ["images", "classes"]
    else:
        graph, args, names = _AllMapsGraph(explainer), (images,), ["images"]
    meta = {"format": ONNX_FORMAT, "variant": variant, "config": json.dumps(explainer.config())}
    return write_onnx(graph, args, path, names, "maps", meta, opset)


class OnnxExplainer(Explainer):
    """An exported explainer run by ONNX Runtime, behind the same interface as :class:`PTameExplainer`.

    The backbone named in the file's config is loaded on first need (to pick its
    top-1 class when no targets are given, or the top-k classes); the maps never
    run it.

    Args:
        path: the ``.onnx`` file.
        backbone: the classifier it explains (checked against the file's config); default: rebuilt by name.
        providers: ONNX Runtime execution providers (default: the CPU).
    """

    def __init__(self, path: str | os.PathLike, backbone=None, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("running ONNX explainers needs onnxruntime: pip install 'glancemap[onnx]'") from exc
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise ValueError(f"cannot read {self.path} as an ONNX model: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != ONNX_FORMAT:
            raise ValueError(f"{self.path} is not an explainer exported by glancemap (no {ONNX_FORMAT!r} metadata)")
        self.variant = meta["variant"]
        self.config: dict[str, Any] = json.loads(meta["config"])
        self._backbone = backbone
        if backbone is not None:
            _check_model("backbone", self.config["backbone"], backbone)

    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = network_from_config(self.config, "backbone")
        return self._backbone

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config["input_size"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def extra_aux_sizes(self) -> list[list[int]]:
        return self.config.get("extra_aux_sizes", [])

    def identity_file(self) -> Path:
        """The file whose hash identifies this explainer in evaluation results."""
        return self.path

    @property
    def aux_sizes(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in [self.config["aux_input_size"], *self.extra_aux_sizes]]

    def with_extra_aux_sizes(self, sizes) -> OnnxExplainer:
        return self.with_aux_sizes([self.aux_sizes[0], *sizes])

    def with_aux_sizes(self, sizes) -> OnnxExplainer:
        if check_sizes(sizes) != self.aux_sizes:
            raise ValueError(
                f"{self.path} was exported with its auxiliary sizes fixed; export it again (glancemap export "
                "--aux-sides) to change them"
            )
        return self

    def with_negative_slope(self, slope: float | None = None, at: str | None = None) -> OnnxExplainer:
        fixed = (self.config.get("negative_slope", 1.0), self.config.get("negative_at", "readout"))
        if (fixed[0] if slope is None else slope, fixed[1] if at is None else at) != fixed:
            raise ValueError(
                f"{self.path} was exported with its negative_slope and negative_at fixed; export it again to "
                "change them"
            )
        return self

    def with_gate(self, margin: float | None) -> OnnxExplainer:
        if margin != self.config.get("gate_margin"):
            raise ValueError(f"{self.path} was exported with its gate_margin fixed; export it again to change it")
        return self

    def _run(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in feeds.items()}
        return torch.from_numpy(self.session.run(["maps"], arrays)[0])

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps ``(B,1,H,W)`` in [0,1] for ``targets`` (default: the backbone's top-1); the ``maps`` variant."""
        if self.variant != "maps":
            raise ValueError(f"{self.path} holds every class's map (variant 'all'): use all_maps()")
        if tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.path} takes images of {self.input_size}, got {tuple(images.shape[-2:])}")
        t = self.targets(images, targets)
        return self._run({"images": images.float(), "classes": t.long()}).to(images.device)

    def all_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Every class's map at the head's resolution, ``(B,K,h,w)``; the ``all`` variant."""
        check_images(images)
        if self.variant != "all":
            raise ValueError(f"{self.path} holds one map per image (variant 'maps'): use explain()")
        return self._run({"images": images.float()}).to(images.device)

    @torch.no_grad()
    def predict_and_explain(self, images: torch.Tensor, top_k: int = 1) -> dict[str, torch.Tensor]:
        """Backbone top-k classes ``(B,k)``, their softmax scores ``(B,k)`` and maps ``(B,k,H,W)``."""
        probs = self.backbone(images).softmax(dim=1)
        scores, classes = probs.topk(top_k, dim=1)
        maps = torch.cat([self.explain(images, classes[:, j]) for j in range(top_k)], dim=1)
        return {"classes": classes, "scores": scores, "maps": maps}


def onnx_config(path: str | os.PathLike) -> dict[str, Any]:
    """The explainer config stored in an exported file's metadata."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as an ONNX model: {exc}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("format") != ONNX_FORMAT:
        raise ValueError(f"{path} is not an explainer exported by glancemap (no {ONNX_FORMAT!r} metadata)")
    return json.loads(meta["config"])
