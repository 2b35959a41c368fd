"""Writing a PyTorch module as one ONNX file with a dynamic batch and metadata (explainers and backbones alike)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn


def write_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    input_names: list[str],
    output_name: str,
    metadata: dict[str, str],
    opset: int = 18,
) -> Path:
    """Exports ``module`` called on ``args`` (every input's first dimension is the batch, left dynamic)
    to ``path`` with ``metadata`` as the model's properties; written to a temporary file, then renamed."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("exporting to ONNX needs onnx and onnxscript: pip install 'glancemap[onnx]'") from exc
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = {name: {0: batch} for name in input_names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
        program = torch.onnx.export(
            module.eval(), args, dynamic_shapes=shapes, input_names=input_names, output_names=[output_name],
            opset_version=opset, dynamo=True, verbose=False,
        )  # fmt: skip
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path
