"""P-TAME itself as registered methods: the trained explainer, multi-scale and one pass.

The explainer comes ready-made in the :class:`MethodContext` (loaded from a
folder by the caller), so this module needs nothing of the explainer package.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .registry import MethodContext, register_method


def explainer_identity(explainer: Any, extra_aux_sizes=None) -> dict:
    """What makes two runs of an explainer the same method: its head file's hash and, when it
    explains at several auxiliary sizes, those sizes (absent for single-pass maps); a first side
    other than its training one and a display other than the plain min-max, when set (absent
    otherwise, so older result folders stay valid)."""
    if hasattr(explainer, "identity_file"):  # an exported (ONNX) explainer: the file is the explainer
        ident = {"explainer_onnx_sha256": _sha256(explainer.identity_file())}
    elif getattr(explainer, "source_dir", None) is not None:
        ident = {"explainer_head_sha256": _sha256(explainer.source_dir / "head.safetensors")}
    else:
        raise ValueError("an explainer's identity needs the folder it was loaded from (load_explainer sets it)")
    sizes = explainer.extra_aux_sizes if extra_aux_sizes is None else extra_aux_sizes
    if sizes:  # absent for single-pass maps, so older result folders stay valid
        ident["extra_aux_sizes"] = [list(s) for s in sizes]
    first = list(explainer.aux_sizes[0])
    if "explainer_head_sha256" in ident:
        trained = json.loads((explainer.source_dir / "config.json").read_text()).get("aux_input_size")
        if trained is not None and first != list(trained):
            ident["aux_input_size"] = first
    if getattr(explainer, "negative_slope", 1.0) != 1.0:
        ident |= {"negative_slope": explainer.negative_slope, "negative_at": explainer.negative_at}
    if getattr(explainer, "gate_margin", None) is not None:
        ident["gate_margin"] = explainer.gate_margin
    return ident


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _single(ctx: MethodContext):
    return ctx.explainer.with_extra_aux_sizes([])


register_method(
    "ptame",
    "P-TAME",
    lambda ctx: ctx.explainer,
    needs="explainer",
    identity=lambda ctx: explainer_identity(ctx.explainer),
    summary="the trained explainer (its multi-scale setting); no backbone pass",
)
register_method(
    "ptame-single",
    "P-TAME (one pass)",
    _single,
    needs="explainer",
    identity=lambda ctx: explainer_identity(ctx.explainer, []),
    summary="the same head with one auxiliary pass (the paper's inference)",
)
