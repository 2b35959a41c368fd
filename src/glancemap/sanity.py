"""Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top.

The backbone's parameterised blocks are re-initialised from the output layer
down, one stage more each time; a method whose maps stay the same while the
model it explains is destroyed is not explaining that model. We report the
Spearman rank correlation between each method's maps on the randomised
backbone and on the trained one (same images, same target class: the trained
backbone's prediction). Lower is better once layers are randomised.

P-TAME's maps never read the backbone at inference; the backbone enters only
through training. So for P-TAME the check means *retraining the head* on each
randomised backbone (a short run from the same initialisation, compared with
the same short run on the trained backbone); see :func:`ptame_factory`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .maps import resize_maps
from .methods import MethodContext, create_method, method_label, method_names

MethodFactory = Callable[[object, int], Callable]  # (backbone copy, stage index) -> explain(images, targets)


def randomization_stages(model: nn.Module) -> list[list[str]]:
    """Parameterised top-level blocks of ``model`` from the output down.

    Sequential containers (timm's ``blocks``, torchvision's ``features`` or
    ``layer4``) are opened one level so each stage is one block, not the whole trunk.
    """

    def is_trunk(m: nn.Module) -> bool:
        return isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > 1

    def units(module: nn.Module, prefix: str) -> list[str]:
        found: list[str] = []
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if not any(True for _ in child.parameters()):
                continue
            if is_trunk(child):
                found += [f"{full}.{n}" for n, c in child.named_children() if any(True for _ in c.parameters())]
            elif any(is_trunk(c) for c in child.children()):  # e.g. ViT's encoder holding its layers
                found += units(child, f"{full}.")
            else:
                found.append(full)
        return found

    return [[u] for u in reversed(units(model, ""))]


@torch.no_grad()
def randomize_(model: nn.Module, names: Sequence[str], seed: int = 0) -> None:
    """Re-initialises every submodule of ``model``'s modules ``names`` that has ``reset_parameters``
    (convolutions and linears draw new random weights; norms reset to identity statistics)."""
    torch.manual_seed(seed)
    modules = dict(model.named_modules())
    for name in names:
        for m in modules[name].modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()


def spearman(a: torch.Tensor, b: torch.Tensor, side: int = 56) -> torch.Tensor:
    """Per-image Spearman rank correlation of two ``(B,1,H,W)`` map batches, compared at ``side x side``
    (average ranks for ties; a constant map scores 1 against an identical one, else 0)."""
    from scipy.stats import rankdata

    a = resize_maps(a.float(), (side, side)).flatten(1).cpu().numpy()
    b = resize_maps(b.float(), (side, side)).flatten(1).cpu().numpy()
    out = []
    for x, y in zip(a, b):
        rx, ry = rankdata(x), rankdata(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = (rx**2).sum() ** 0.5 * (ry**2).sum() ** 0.5
        if denom > 0:
            out.append(float((rx * ry).sum() / denom))
        else:  # a constant map has no ranking: it agrees only with an identical map
            out.append(1.0 if (x == y).all() else 0.0)
    return torch.tensor(out)


def cascading_randomization(
    backbone,
    methods: dict[str, MethodFactory],
    images: torch.Tensor,
    stages: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Rank correlation of each method's maps before and after cascading randomisation.

    Args:
        backbone: the trained classifier (left untouched; copies are randomised).
        methods: name -> factory ``(backbone, stage) -> explain``; stage 0 is the
            trained backbone, stage ``k`` has the first ``k`` of ``stages`` randomised.
        images: ``(B,3,H,W)`` in [0,1].
        stages: module-name groups, output side first (default :func:`randomization_stages`).

    Returns one row per method and stage: ``{"method", "stage", "randomized", "spearman", "se"}``.
    """
    stages = [list(s) for s in (stages or randomization_stages(backbone.model))]
    with torch.no_grad():
        targets = backbone(images).argmax(dim=1)
    reference: dict[str, torch.Tensor] = {}
    rows = []
    current = copy.deepcopy(backbone)
    randomized: list[str] = []
    for k in range(len(stages) + 1):
        if k:
            randomize_(current.model, stages[k - 1], seed + k)
            randomized += stages[k - 1]
        for name, factory in methods.items():
            maps = factory(current, k)(images, targets).detach()
            if k == 0:
                reference[name] = maps
            rho = spearman(reference[name], maps)
            se = float(rho.std() / len(rho) ** 0.5) if len(rho) > 1 else 0.0
            rows.append(
                {
                    "method": name,
                    "stage": k,
                    "randomized": ",".join(stages[k - 1]) if k else "none",
                    "spearman": float(rho.mean()),
                    "se": se,
                }
            )
            log(f"stage {k} ({rows[-1]['randomized']}): {name} spearman {rho.mean():.3f} ± {se:.3f}")
    return rows


def ptame_factory(
    auxiliary_name: str, train_files: Sequence[Path], out: Path, steps: int, batch_size: int = 16, **config_overrides
) -> MethodFactory:
    """P-TAME for the sanity check: a head trained for ``steps`` on the given backbone copy.

    Every stage, the trained backbone (stage 0) included, gets the same short
    run from the same initialisation, so only the backbone differs.
    """
    from .training import TrainConfig, train

    def make(backbone, stage: int):
        config = TrainConfig(
            data=[str(f) for f in train_files],
            out=str(out / f"stage{stage}"),
            backbone=backbone.name,
            auxiliary=auxiliary_name,
            max_steps=steps,
            epochs=10**6,
            batch_size=batch_size,
            checkpoint_every=10**6,
            device=str(backbone.device),
            **config_overrides,
        )
        # the check owns these folders: a rerun retrains every stage
        return train(config, progress_bar=False, backbone=copy.deepcopy(backbone), overwrite=True)

    return make


def write_sanity_table(rows: list[dict], path: Path) -> None:
    """Markdown table: one row per stage, one column per method (Spearman ± s.e.)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stages = sorted({(r["stage"], r["randomized"]) for r in rows})
    cell = {(r["method"], r["stage"]): f"{r['spearman']:.3f} ± {r['se']:.3f}" for r in rows}
    lines = [
        "| stage | randomised down to | " + " | ".join(method_label(m) for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for k, what in stages:
        lines.append(f"| {k} | {what} | " + " | ".join(cell.get((m, k), "–") for m in methods) + " |")
    path.write_text("\n".join(lines) + "\n")


def limit_stages(stages: list[list[str]], max_stages: int) -> list[list[str]]:
    """At most ``max_stages`` stages, the last one taking all the rest (0: no limit)."""
    if 0 < max_stages < len(stages):
        return stages[: max_stages - 1] + [[n for s in stages[max_stages - 1 :] for n in s]]
    return stages


def run_sanity(
    data: Sequence[str],
    out: Path,
    methods: str = "ptame,gradcam,gradcam++,auxcam",
    explainer: str = "default",
    train_data: Sequence[str] | None = None,
    images: int = 16,
    max_stages: int = 6,
    ptame_steps: int = 60,
    ptame_batch_size: int = 16,
    lr: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """The cascading randomisation check on the first ``images`` of ``data`` for the explainer's backbone;
    writes ``sanity.json`` and ``sanity.md`` into ``out`` and returns the rows.

    P-TAME (``ptame``) is retrained on every randomised backbone, with the explainer's own recipe
    (``lr`` overrides its learning rate), ``ptame_steps`` steps on ``train_data``.
    """
    import json

    from .explainer import network_from_config, read_explainer_config
    from .images import list_images, load_image
    from .training import training_recipe

    names = method_names(methods)
    if "ptame" in names and not train_data:
        raise ValueError("method 'ptame' retrains its head on every randomised backbone: pass --train-data")
    cfg = read_explainer_config(explainer)
    backbone = network_from_config(cfg, "backbone", device)
    auxiliary = network_from_config(cfg, "auxiliary", device)
    transform = backbone.preprocessing.eval_transform()
    batch = torch.stack([transform(load_image(f)) for f in list_images(data)[:images]]).to(device)
    stages = limit_stages(randomization_stages(backbone.model), max_stages)
    out.mkdir(parents=True, exist_ok=True)
    factories: dict[str, MethodFactory] = {}
    for n in names:
        if n == "ptame":
            recipe = training_recipe(cfg) | ({} if lr is None else {"lr": lr})
            factories[n] = ptame_factory(
                auxiliary.name,
                list_images(train_data),
                out / "ptame-heads",
                ptame_steps,
                ptame_batch_size,
                seed=seed,
                auxiliary_weights=cfg["auxiliary"].get("weights"),  # the explainer's own auxiliary
                **recipe,
            )
        else:
            factories[n] = lambda bb, k, n=n: create_method(
                n, MethodContext(bb, auxiliary=auxiliary, options={"seed": seed})
            )
    rows = cascading_randomization(backbone, factories, batch, stages, seed=seed)
    (out / "sanity.json").write_text(json.dumps(rows, indent=1))
    write_sanity_table(rows, out / "sanity.md")
    return rows
