"""Methods registered by name, so the CLI, ``evaluate`` and ``sanity`` list them from one place.

Like the classifier registry: ``register_method(name, label, build)`` adds a
method, :func:`create_method` builds it from a :class:`MethodContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Explainer


@dataclass
class MethodContext:
    """What a method may be built from.

    Args:
        backbone: the classifier being explained.
        explainer: a trained P-TAME explainer for that backbone (P-TAME's methods).
        auxiliary: the auxiliary network (the auxiliary CAM, when no explainer is given).
        options: method settings (``cam_batch_size``, ``rise_masks``, ``opticam_steps``, ``seed``).
    """

    backbone: Any
    explainer: Any = None
    auxiliary: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        return self.options.get(name, default)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``needs`` names what the caller must load first (``"explainer"``,
    ``"auxiliary"`` or None); ``identity`` returns the settings that make two
    runs of the method comparable, recorded beside evaluation results.
    """

    name: str
    label: str
    build: Callable[[MethodContext], Explainer]
    needs: str | None = None
    identity: Callable[[MethodContext], dict] = lambda ctx: {}
    summary: str = ""
    reads_backbone: bool = False  # needs the backbone's layers or gradients, not only its outputs


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    label: str,
    build: Callable[[MethodContext], Explainer],
    *,
    needs: str | None = None,
    identity: Callable[[MethodContext], dict] | None = None,
    summary: str = "",
    reads_backbone: bool = False,
) -> MethodSpec:
    """Adds (or replaces) a method under ``name``; ``label`` is its display name in tables.
    ``reads_backbone``: it hooks the backbone's layers or takes its gradients, so a black-box
    backbone (one you can only call) is refused."""
    if needs not in (None, "explainer", "auxiliary"):
        raise ValueError(f"needs must be None, 'explainer' or 'auxiliary', got {needs!r}")
    spec = MethodSpec(name, label, build, needs, identity or (lambda ctx: {}), summary, reads_backbone)
    METHODS[name] = spec
    return spec


def method_names(spec: str) -> list[str]:
    """``"gradcam,ptame"`` or ``"all"`` -> registered method names, refusing unknown ones."""
    names = list(METHODS) if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return names


def create_method(name: str, context: MethodContext) -> Explainer:
    """The method ``name`` for ``context.backbone``, behind ``explain(images, targets) -> maps``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    spec = METHODS[name]
    if spec.reads_backbone and not getattr(context.backbone, "differentiable", True):
        raise ValueError(
            f"method {name!r} reads the backbone's layers or gradients, and {context.backbone.name!r} is a black box "
            "you can only call; use a method that needs only its outputs (ptame, rise, auxcam)"
        )
    if spec.needs == "explainer" and context.explainer is None:
        raise ValueError(f"method {name!r} needs an explainer")
    if (
        spec.needs == "auxiliary"
        and getattr(context.explainer, "auxiliary", None) is None
        and context.auxiliary is None
    ):
        raise ValueError(f"method {name!r} needs an explainer or an auxiliary classifier")
    return spec.build(context)


def method_label(name: str) -> str:
    """Display name: ``gradcam++`` -> ``Grad-CAM++``; ``ptame-e8`` (a further explainer) -> ``P-TAME (e8)``."""
    if name in METHODS:
        return METHODS[name].label
    return f"P-TAME ({name[6:]})" if name.startswith("ptame-") else name
