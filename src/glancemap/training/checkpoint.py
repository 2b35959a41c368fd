"""The checkpoint format (one safetensors file: head, optimizer and schedule; JSON metadata)
and the training log that must agree with it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..version import __version__
from .config import TrainConfig

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "train_log.jsonl"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def trim_log(path: Path, last_step: int) -> int:
    """Keep the log's records up to ``last_step`` (the checkpoint a run resumes from).

    Steps after the checkpoint are trained again on resume; without this the log
    would hold them twice. A torn last line (a run killed mid-write) is dropped too.
    Returns how many lines were removed; the file is replaced atomically.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            keep = int(record["step"]) <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def logged_calls(path: Path) -> int:
    """The most black-box calls the training log at ``path`` records (0 without a log): what a
    killed run had spent, the steps after its last checkpoint included."""
    if not path.exists():
        return 0
    most = 0
    for line in path.read_text().splitlines():
        try:
            most = max(most, int(json.loads(line).get("black_box_calls", 0)))
        except (ValueError, TypeError, AttributeError):
            continue  # a torn last line
    return most


def check_resumable(meta: dict, config: TrainConfig, data: dict, path: Path) -> None:
    """Refuses to resume the checkpoint at ``path`` (its metadata ``meta``) with other identity settings
    or other images (``data``, their fingerprint)."""
    saved = meta["config"]
    mine = asdict(config)
    # a field missing from the checkpoint is newer than it: the run had that field's default
    defaults = asdict(TrainConfig(data=[], out=""))
    diff = [k for k in TrainConfig.IDENTITY if json.dumps(saved.get(k, defaults[k])) != json.dumps(mine.get(k))]
    if diff:
        raise ValueError(
            f"--resume: checkpoint {path} was made with other settings ({', '.join(diff)}: "
            f"{[saved.get(k) for k in diff]} vs {[mine.get(k) for k in diff]})"
        )
    progress = meta["progress"]
    if "data" in progress and progress["data"] != data:
        raise ValueError(
            f"--resume: checkpoint {path} was trained on {progress['data']['images']} other image(s) "
            f"(fingerprint {progress['data']['sha256']}); these {data['images']} differ "
            f"({data['sha256']}). Resume with the same data, or train into another --out"
        )


def save_checkpoint(
    path: Path,
    head: torch.nn.Module,
    optimizer,
    scheduler,
    progress: dict,
    config: TrainConfig,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """One safetensors file (weights + optimizer tensors + ``extra`` tensors, JSON metadata), written
    to a temp file then renamed."""
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    meta = {
        "progress": json.dumps(progress),
        "optimizer": json.dumps(opt_meta),
        "scheduler": json.dumps(scheduler.state_dict()),
        "config": json.dumps(asdict(config)),
        "glancemap_version": __version__,
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:  # make the bytes durable before the rename publishes them
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    missing = [k for k in ("progress", "optimizer", "scheduler", "config") if k not in meta]
    if missing:
        raise ValueError(
            f"{path} is not a glancemap checkpoint (no {', '.join(missing)} metadata); delete it to start over"
        )
    try:
        return tensors, {
            k: (json.loads(v) if k not in ("glancemap_version", "ptame_version") else v) for k, v in meta.items()
        }
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its metadata is not valid JSON ({exc}); delete it to start over") from None


def max_abs_weight(head: torch.nn.Module) -> float:
    """The largest absolute value among the head's floating-point tensors (inf or nan if any is)."""
    largest = 0.0
    for t in head.state_dict().values():
        if t.is_floating_point() and t.numel():
            if not torch.isfinite(t).all():
                return float("nan")
            largest = max(largest, t.abs().max().item())
    return largest


def checkpoint_advice(path: Path) -> str:
    """What a diverged run can do next, judged from its last checkpoint (written only when its loss and
    weights were finite)."""
    if not path.exists():
        return "no checkpoint was written yet: start again with a lower --lr"
    try:
        progress = load_checkpoint(path)[1].get("progress", {})
    except ValueError:
        return f"the checkpoint {path} is unreadable: start again with a lower --lr (--overwrite)"
    where = f"the last checkpoint is {path} (step {progress.get('step', '?')}"
    if "loss" in progress:
        where += f", loss {progress['loss']:.4g}, largest weight {progress['max_abs_weight']:.3g}"
    where += ")"
    if progress.get("max_abs_weight", 0.0) > 1e4:  # a head starting from a CAM has weights of order 1
        return f"{where}, but its weights have grown large, so it may be diverging too: start again with a lower --lr"
    return f"{where}: continue from it with --resume and a lower --lr, or check the images"


def apply_optimizer_changes(optimizer, saved: dict, mine: dict, defaults: dict) -> dict[str, list]:
    """Applies a resumed run's new learning rate or weight decay (``TrainConfig.RESUMABLE``) to the
    restored optimizer and one-cycle schedule; returns ``{field: [old, new]}`` for each change."""
    changed = {}
    old_lr, new_lr = saved.get("lr", defaults["lr"]), mine["lr"]
    if old_lr != new_lr:
        factor = new_lr / old_lr
        for group in optimizer.param_groups:  # the schedule reads these each step
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= factor
        changed["lr"] = [old_lr, new_lr]
    old_wd, new_wd = saved.get("weight_decay", defaults["weight_decay"]), mine["weight_decay"]
    if old_wd != new_wd and new_wd is not None:
        for group in optimizer.param_groups:
            group["weight_decay"] = new_wd
        changed["weight_decay"] = [old_wd, new_wd]
    return changed
