"""Training the attention head: frozen backbone and auxiliary, one trainable head.

Runs as one process, or under ``torchrun --nproc_per_node N`` with
DistributedDataParallel and a distributed sampler (gloo on CPU, nccl on GPU).
Checkpoints are written atomically every N steps and ``resume=True`` picks up
from the last one, skipping the batches already seen in that epoch.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..version import __version__
from ..explainer import LossWeights, PTameExplainer, PTameLoss
from ..explainer.perturbation import perturb, remove_regions, top_fraction_mask
from ..models import Classifier, load_classifier
from ..images import BadFileLog, ImageFiles, collate_skip_none, list_images, load_image, scan_images

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "train_log.jsonl"


@dataclass(frozen=True)
class Preset:
    loss: LossWeights
    weight_decay: float
    note: str


# The paper's tuned values per backbone; "default" is the general setting.
PRESETS: dict[str, Preset] = {
    "default": Preset(LossWeights(), 1e-4, "general defaults"),
    "paper-vgg16": Preset(LossWeights(ce=0.07278, area=0.977712, tv=1e-4), 0.13324, "P-TAME paper, VGG-16"),
    "paper-resnet50": Preset(LossWeights(ce=0.16143, area=0.83857, tv=0.0), 2.4267e-4, "P-TAME paper, ResNet-50"),
    "paper-vit_b_16": Preset(
        LossWeights(ce=0.13129, area=0.83857, tv=0.0, beta=0.0, p_area=0.5), 1.3309e-4, "P-TAME paper, ViT-B/16"
    ),
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints and the explainer config)."""

    data: list[str]
    out: str
    backbone: str = "efficientnet_lite2"
    backbone_weights: str | None = None
    auxiliary: str = "efficientnet_lite0"
    auxiliary_weights: str | None = None
    layers: list[str] | None = None
    aux_input_size: list[int] | None = None
    extra_aux_sizes: list[int] = field(default_factory=list)  # inference only: multi-scale sides (PTameExplainer)
    # scale augmentation: each step runs the auxiliary at a side drawn from these (empty: aux_input_size),
    # so the head also learns the features that multi-scale inference reads
    train_aux_sides: list[int] = field(default_factory=list)
    preset: str = "default"
    loss: dict[str, float | str] = field(default_factory=dict)  # overrides of the preset's weights
    weight_decay: float | None = None  # None: the preset's
    init: str = "aux-cam"  # "aux-cam": start from the auxiliary's calibrated CAM; "paper": default PyTorch init
    init_from: str | None = None  # start from a saved explainer's head instead (fine-tuning)
    # "shared" (every class trained; see SharedReadoutHead), "per-class" (the paper's) or "auto":
    # shared when the auxiliary classifies the backbone's classes, else per-class
    head: str = "auto"
    head_bias: bool | None = None  # None: with aux-cam (the calibration needs an offset), not with paper
    cam_keep: float = 0.4  # aux-cam calibration: fraction of pixels the initial sigmoid maps keep above 0.5
    epochs: int = 1
    batch_size: int = 32  # per process
    lr: float = 1e-4
    crop_scale: tuple[float, float] = (0.25, 1.0)
    max_steps: int | None = None  # stop early (smoke tests, benchmarks)
    checkpoint_every: int = 50
    workers: int = 1
    seed: int = 0
    device: str = "auto"
    dump_rank_weights: bool = False  # each rank writes its final head (DDP consistency tests)
    command: str | None = None  # the command line, recorded in the explainer's config

    def loss_weights(self) -> LossWeights:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        return replace(PRESETS[self.preset].loss, **self.loss)

    def resolved_weight_decay(self) -> float:
        return PRESETS[self.preset].weight_decay if self.weight_decay is None else self.weight_decay

    # fields that must agree between a checkpoint and a resumed run
    IDENTITY = ("backbone", "backbone_weights", "auxiliary", "auxiliary_weights", "layers", "aux_input_size",
                "train_aux_sides", "preset", "loss", "weight_decay", "init", "init_from", "head", "head_bias", "epochs",
                "batch_size", "lr", "seed")

    def uses_head_bias(self) -> bool:
        return self.init == "aux-cam" if self.head_bias is None else self.head_bias


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------- distributed


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistEnv:
    """Reads torchrun's environment; initialises the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way through (after a resume)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


# ----------------------------------------------------------------- checkpoints


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
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


def save_checkpoint(path: Path, head: torch.nn.Module, optimizer, scheduler, progress: dict, config: TrainConfig) -> None:
    """One safetensors file (weights + optimizer tensors, JSON metadata), written to a temp file then renamed."""
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
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
    return tensors, {k: (json.loads(v) if k not in ("glancemap_version", "ptame_version") else v) for k, v in meta.items()}


# ----------------------------------------------------------------- training


def _resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present; under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def build_explainer(
    config: TrainConfig, device: torch.device, calibration_files: Sequence[Path] | None = None,
    backbone: Classifier | None = None,
) -> PTameExplainer:
    """Backbone (``config.backbone`` unless given), auxiliary and a freshly initialised head (see ``TrainConfig.init``)."""
    if backbone is None:
        backbone = load_classifier(config.backbone, config.backbone_weights, device=device)
    auxiliary = load_classifier(config.auxiliary, config.auxiliary_weights, device=device)
    size = tuple(config.aux_input_size) if config.aux_input_size else None
    explainer = PTameExplainer(
        backbone, auxiliary, config.layers, size, head_bias=config.uses_head_bias(), head=config.head,  # type: ignore[arg-type]
        extra_aux_sizes=config.extra_aux_sizes,
    )
    if config.init == "aux-cam":
        cam = explainer.features.cam_weights(backbone.class_names)
        if cam is None:
            print(
                "glancemap: aux-cam init needs the last auxiliary layer to feed its linear classifier and the same "
                "classes as the backbone; using the paper's default init instead",
                file=sys.stderr,
            )
        else:
            explainer.head.init_from_cam(cam[0])
            if calibration_files:
                images = _calibration_batch(explainer, calibration_files, config)
                calibrate_cam(explainer, images.to(device), config.cam_keep)
    elif config.init != "paper":
        raise ValueError(f"unknown init {config.init!r}: use 'aux-cam' or 'paper'")
    if config.init_from:
        from ..explainer import load_explainer

        start = load_explainer(config.init_from, backbone=explainer.backbone, auxiliary=explainer.auxiliary)
        if start.layers != explainer.layers or start.head.state_dict().keys() != explainer.head.state_dict().keys():
            raise ValueError(
                f"{config.init_from} has another head layout ({start.head.kind} head, layers {start.layers}); "
                "cannot start from it"
            )
        explainer.head.load_state_dict(start.head.state_dict())
    return explainer.to(device)


@torch.no_grad()
def calibrate_cam(explainer: PTameExplainer, images: torch.Tensor, keep: float) -> None:
    """Rescales a CAM-initialised head so its sigmoid maps are soft, not saturated.

    Raw CAM values are logit-sized (tens), so ``sigmoid(CAM)`` is ~1 almost
    everywhere. We scale the fusion so the target maps' pixel values have a
    standard deviation of 2 and set the bias so a ``keep`` fraction of pixels
    lies above 0.5: the head starts as a soft, thresholded auxiliary CAM.
    """
    head = explainer.head
    targets = explainer.backbone(images).argmax(dim=1)
    raw = head(explainer.features(images), targets, per_sample=True).flatten()
    scale = 2.0 / raw.std().clamp_min(1e-6)
    threshold = torch.quantile(raw.float(), 1.0 - keep)
    head.rescale_(scale.item(), -(threshold * scale).item())


def step_aux_size(config: TrainConfig, step: int) -> tuple[int, int] | None:
    """The auxiliary's side at ``step``: drawn from ``train_aux_sides`` by a generator seeded with
    the run's seed and the step, so every rank and a resumed run draw the same."""
    if not config.train_aux_sides:
        return None
    if any(side < 1 for side in config.train_aux_sides):
        raise ValueError(f"train_aux_sides must be positive sides in pixels, got {config.train_aux_sides}")
    side = random.Random(config.seed * 1_000_003 + step).choice(config.train_aux_sides)
    return (side, side)


def training_step(
    explainer: PTameExplainer, head: torch.nn.Module, images: torch.Tensor, loss_fn: PTameLoss,
    aux_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Targets are the backbone's top-1 on the clean batch; the map of each image's target
    multiplies it; the loss sees the maps of every batch target on every image (B x B).
    ``aux_size``: the side the auxiliary runs at this step (default: its input size)."""
    with torch.no_grad():
        targets = explainer.backbone(images).argmax(dim=1)
    features = explainer.features(images, aux_size)
    raw = head(features, targets)  # (B,B,h,w): all batch targets on each image
    maps = torch.sigmoid(raw)
    b = images.shape[0]
    diagonal = torch.arange(b)
    own = maps[diagonal, diagonal].unsqueeze(1)  # (B,1,h,w)
    logits = explainer.backbone(perturb(images, own))
    removed_logits = None
    w = loss_fn.weights
    if w.destroy:
        removed_logits = explainer.backbone(remove_regions(images, own, w.destroy_fill, w.destroy_sigma))
    rank_logits = None
    if w.rank_destroy:
        lo, hi = w.rank_fractions
        fraction = lo + (hi - lo) * torch.rand(b)
        top = top_fraction_mask(raw[diagonal, diagonal].unsqueeze(1), fraction)  # ranked on logits: no saturation
        rank_logits = explainer.backbone(remove_regions(images, top, "inpaint", w.destroy_sigma))
    loss, terms = loss_fn(logits, targets, maps, removed_logits, rank_logits)
    terms = dict(terms)
    terms["mask_mean"] = own.detach().mean()
    terms["kept_top1"] = (logits.detach().argmax(1) == targets).float().mean()
    return loss, terms


def _calibration_batch(explainer: PTameExplainer, files: Sequence[Path], config: TrainConfig) -> torch.Tensor:
    """Up to one batch of centre-cropped images, the same on every rank (for aux-cam calibration)."""
    transform = explainer.backbone.preprocessing.eval_transform()
    g = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(files), generator=g)[: max(config.batch_size, 8)].tolist()
    return torch.stack([transform(load_image(files[i])) for i in pick])


def train(config: TrainConfig, resume: bool = False, progress_bar: bool = True,
          backbone: Classifier | None = None) -> PTameExplainer:
    """Trains a P-TAME head and saves the explainer to ``<out>/explainer``. Returns it (on every rank).

    ``backbone`` replaces the one ``config.backbone`` names (e.g. a randomised
    copy for the sanity check); its name must still match the config's.
    """
    if backbone is not None and backbone.name != config.backbone:
        raise ValueError(f"backbone {backbone.name!r} does not match config.backbone {config.backbone!r}")
    start_wall = time.time()
    device = _resolve_device(config.device)
    env = setup_distributed(device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    torch.manual_seed(config.seed)

    files = list_images(config.data)
    with warnings.catch_warnings():
        if not env.is_main:  # one warning per bad file, not one per process
            warnings.simplefilter("ignore")
        files, bad = scan_images(files, BadFileLog())
    if not files:
        raise ValueError(f"no readable images in {config.data}")
    if env.is_main and bad.count:
        print(f"glancemap: skipped {bad.count} unreadable file(s) of {len(files) + bad.count}", file=sys.stderr)
    explainer = build_explainer(config, device, files, backbone=backbone.to(device) if backbone is not None else None)
    dataset = ImageFiles(files, explainer.backbone.preprocessing.train_transform(tuple(config.crop_scale)))  # type: ignore[arg-type]
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
    )
    steps_per_epoch = math.ceil(sampler.num_samples / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    head = explainer.head
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.resolved_weight_decay(), amsgrad=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(total_steps, 2)
    )
    step = 0
    if resume and ckpt_path.exists():
        tensors, meta = load_checkpoint(ckpt_path)
        saved = meta["config"]
        mine = asdict(config)
        # a field missing from the checkpoint is newer than it: the run had that field's default
        defaults = asdict(TrainConfig(data=[], out=""))
        diff = [k for k in TrainConfig.IDENTITY if json.dumps(saved.get(k, defaults[k])) != json.dumps(mine.get(k))]
        if diff:
            raise ValueError(
                f"--resume: checkpoint {ckpt_path} was made with other settings ({', '.join(diff)}: "
                f"{[saved.get(k) for k in diff]} vs {[mine.get(k) for k in diff]})"
            )
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        scheduler.load_state_dict(meta["scheduler"])
        step = int(meta["progress"]["step"])
        if env.is_main:
            dropped = trim_log(out / LOG_NAME, step)
            print(
                f"glancemap: resumed from {ckpt_path} at step {step}/{total_steps}"
                + (f"; dropped {dropped} log lines past the checkpoint" if dropped else ""),
                file=sys.stderr,
            )
    elif resume and env.is_main:
        print(f"glancemap: --resume given but no checkpoint in {out}; starting fresh", file=sys.stderr)

    model: torch.nn.Module = head
    if env.enabled:
        model = DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = PTameLoss(config.loss_weights())
    explainer.train()

    log = open(out / LOG_NAME, "a") if env.is_main else None
    bar = None
    if env.is_main and progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    last_terms: dict[str, float] = {}
    step_end = time.perf_counter()
    try:
        while step < total_steps:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, skip=batch_in_epoch * config.batch_size)
            loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                sampler=sampler,
                num_workers=config.workers,
                collate_fn=collate_skip_none,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            for batch in loader:
                if step >= total_steps:
                    break
                ok = torch.tensor([0 if batch is None else 1], device=device)
                if env.enabled:  # every rank must take the same number of steps
                    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
                if not ok.item():
                    continue
                images = batch[0].to(device, non_blocking=True)
                loss, terms = training_step(explainer, model, images, loss_fn, step_aux_size(config, step))
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss became {loss.item()} at step {step} ("
                        + ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                        + f"); the last good checkpoint is {ckpt_path if ckpt_path.exists() else 'none'}. "
                        "Lower --lr or check the images."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                last_terms = {"loss": loss.item()} | {k: v.item() for k, v in terms.items()}
                # wall seconds since the previous step ended: loading, the step itself and logging
                now = time.perf_counter()
                step_s, step_end = now - step_end, now
                if env.is_main:
                    record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                              "step_s": round(step_s, 3)} | last_terms
                    log.write(json.dumps(record) + "\n")  # type: ignore[union-attr]
                    log.flush()  # type: ignore[union-attr]
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            epoch=epoch, loss=f"{last_terms['loss']:.3f}", ce=f"{last_terms['ce']:.3f}",
                            area=f"{last_terms['area']:.3f}", tv=f"{last_terms['tv']:.3f}",
                            mask=f"{last_terms['mask_mean']:.2f}",
                        )
                    if step % config.checkpoint_every == 0 or step == total_steps:
                        save_checkpoint(ckpt_path, head, optimizer, scheduler, {"step": step}, config)
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    if env.enabled:
        # BN running statistics are per process; rank 0's are the ones saved
        for buf in head.buffers():
            dist.broadcast(buf, src=0)
    explainer.eval()
    explainer.training_info = {
        "preset": config.preset,
        "loss_weights": config.loss_weights().to_dict(),
        "weight_decay": config.resolved_weight_decay(),
        "init": config.init,
        "head": explainer.head.kind,
        "train_aux_sides": list(config.train_aux_sides),
        "epochs": config.epochs,
        "steps": step,
        "batch_size": config.batch_size,
        "world_size": env.world_size,
        "lr": config.lr,
        "images": len(files),
        "skipped_files": bad.count,
        "final_terms": last_terms,
        "wall_time_s_last_session": round(time.time() - start_wall, 1),
        "device": str(device),
        "command": config.command,
    }
    if config.dump_rank_weights:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(out / f"rank{env.rank}_head.safetensors"))
    if env.is_main:
        explainer.save(out / "explainer")
    if env.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return explainer


def training_recipe(explainer_config: dict) -> dict:
    """The TrainConfig fields an explainer was trained with (head, loss, init, lr, ...), to retrain it alike.

    The inverse of the ``training`` record that :func:`train` writes into the explainer's config.
    """
    info = explainer_config.get("training", {})
    recipe = {"head": explainer_config.get("head", "per-class")}
    for key in ("preset", "loss_weights", "init", "weight_decay", "lr", "train_aux_sides"):
        if key in info:
            recipe["loss" if key == "loss_weights" else key] = info[key]  # the record's one renamed field
    return recipe


def imagenet_sample_split(root: str | os.PathLike, split: str) -> list[Path]:
    """The shared ImageNet sample's files: ``train`` = ``index % 5 != 0``, ``dev`` = ``index % 5 == 0``."""
    import csv

    root = Path(root)
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = (lambda i: i % 5 != 0) if split == "train" else (lambda i: i % 5 == 0)
    if split not in ("train", "dev"):
        raise ValueError("split must be 'train' or 'dev'")
    return [root / r["file"] for r in rows if keep(int(r["index"]))]

