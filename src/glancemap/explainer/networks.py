"""The networks an explainer config names: rebuilding them, and checking given ones against it."""

from __future__ import annotations

from typing import Any

import torch

from ..models import Classifier, load_classifier


class ExplainerMismatchError(ValueError):
    """The saved explainer was made for another backbone, auxiliary or class count."""


def _check_model(role: str, expected: dict, got: Classifier) -> None:
    if got.name != expected["name"]:
        raise ExplainerMismatchError(
            f"this explainer was trained for {role} {expected['name']!r}, not {got.name!r}; "
            f"train one for {got.name!r} with 'glancemap train'"
        )
    if got.num_classes != expected["num_classes"]:
        raise ExplainerMismatchError(
            f"this explainer's {role} {expected['name']!r} had {expected['num_classes']} classes, "
            f"the given one has {got.num_classes}"
        )
    # configs written before fingerprints were recorded carry none: nothing to compare
    if expected.get("fingerprint") and (mine := got.fingerprint()) != expected["fingerprint"]:
        raise ExplainerMismatchError(
            f"this explainer was trained for {role} {expected['name']!r} with other weights (fingerprint "
            f"{expected['fingerprint']}, the given network's is {mine}); its maps would not "
            f"explain this network: train one for it with 'glancemap train'"
        )


def network_from_config(cfg: dict[str, Any], role: str, device: str | torch.device | None = None) -> Classifier:
    """Rebuilds the ``"backbone"`` or ``"auxiliary"`` an explainer config names (frozen)."""
    spec = cfg[role]
    if spec.get("source") == "custom":
        raise ExplainerMismatchError(
            f"this explainer explains a custom {role} {spec['name']!r}: pass {role}=Classifier(...) "
            "or register_classifier() it"
        )
    return load_classifier(spec["name"], spec.get("weights"), device=device).freeze()
