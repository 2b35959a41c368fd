"""The training loop: frozen backbone and auxiliary, one trainable head.

Runs as one process, or under ``torchrun --nproc_per_node N`` with
DistributedDataParallel and a distributed sampler (gloo on CPU, nccl on GPU).
Checkpoints are written atomically every N steps and ``resume=True`` picks up
from the last one, skipping the batches already seen in that epoch.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..explainer import PTameExplainer, PTameLoss
from ..explainer.perturbation import perturb, remove_regions, top_fraction_mask
from ..images import BadFileLog, ImageFiles, collate_skip_none, list_images, scan_images
from ..models import Classifier
from .checkpoint import (
    CHECKPOINT_NAME,
    LOG_NAME,
    apply_optimizer_changes,
    check_resumable,
    checkpoint_advice,
    load_checkpoint,
    logged_calls,
    max_abs_weight,
    save_checkpoint,
    trim_log,
    unflatten_optimizer,
)
from .config import TrainConfig, TrainingDivergedError, auto_steps
from .distributed import ResumableDistributedSampler, StopRequest, resolve_device, setup_distributed, stop_on_sigterm
from .init import build_explainer, load_networks, setup_calls
from .lowrank import fold_low_rank, restrict_to_low_rank
from .outdir import claim_folder, data_fingerprint
from .readout import Readout
from .selection import HOLDOUT_SHARE, check_calls, held_out_score, holdout_split
from .surrogate import REFIT_EVERY, CallPlan, Surrogate, calls_of, plan_calls


def step_aux_size(config: TrainConfig, step: int, sides: Sequence[int] | None = None) -> tuple[int, int] | None:
    """The auxiliary's side at ``step``: drawn from ``sides`` (default ``config.train_aux_sides``) by a
    generator seeded with the run's seed and the step, so every rank and a resumed run draw the same."""
    sides = config.train_aux_sides if sides is None else sides
    if not sides:
        return None
    if any(side < 1 for side in sides):
        raise ValueError(f"train_aux_sides must be positive sides in pixels, got {list(sides)}")
    side = random.Random(config.seed * 1_000_003 + step).choice(list(sides))
    return (side, side)


def training_step(
    explainer: PTameExplainer,
    head: torch.nn.Module,
    images: torch.Tensor,
    loss_fn: PTameLoss,
    aux_size: tuple[int, int] | None = None,
    surrogate: Surrogate | None = None,
    query: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Targets are the backbone's top-1 on the clean batch; the map of each image's target
    multiplies it; the loss sees the maps of every batch target on every image (B x B).
    ``aux_size``: the side the auxiliary runs at this step (default: its input size).
    ``surrogate``: a black-box backbone's differentiable stand-in, which scores the masked and
    removed images (the black box still gives the targets); ``query`` also sends those images to
    the black box, for the surrogate's next refit."""
    if surrogate is None:
        with torch.no_grad():
            targets = explainer.backbone(images).argmax(dim=1)

        def classify(x: torch.Tensor) -> torch.Tensor:
            return explainer.backbone(x)
    else:
        targets = surrogate.targets(images)

        def classify(x: torch.Tensor) -> torch.Tensor:
            return surrogate.classify(x, query)

    features = explainer.features(images, aux_size)
    raw = head(features, targets)  # (B,B,h,w): all batch targets on each image
    maps = torch.sigmoid(raw)
    b = images.shape[0]
    diagonal = torch.arange(b)
    own = maps[diagonal, diagonal].unsqueeze(1)  # (B,1,h,w)
    logits = classify(perturb(images, own))
    removed_logits = None
    w = loss_fn.weights
    if w.destroy:
        removed_logits = classify(remove_regions(images, own, "blur", w.destroy_sigma))
    rank_logits = None
    if w.rank_destroy:
        lo, hi = w.rank_fractions
        fraction = lo + (hi - lo) * torch.rand(b)
        top = top_fraction_mask(raw[diagonal, diagonal].unsqueeze(1), fraction)  # ranked on logits: no saturation
        rank_logits = classify(remove_regions(images, top, "inpaint", w.destroy_sigma))
    loss, terms = loss_fn(logits, targets, maps, removed_logits, rank_logits)
    terms = dict(terms)
    terms["mask_mean"] = own.detach().mean()
    terms["kept_top1"] = (logits.detach().argmax(1) == targets).float().mean()
    return loss, terms


def black_box_plan(
    config: TrainConfig,
    explainer: PTameExplainer,
    steps: int,
    setup: int,
    held_out: int,
    images: int,
    is_main: bool = True,
) -> CallPlan:
    """How gradient-free training spends ``config.call_budget`` calls per image on ``images`` images
    (``held_out`` of them for the check), ``setup`` spent building the start; printed if ``is_main``."""
    w = config.loss_weights()
    batches_queried = 1 + bool(w.destroy) + bool(w.rank_destroy)
    # the check on held-out images and the start it may rebuild on every image call the black box too
    distilled = bool(explainer.training_info.get("readout"))
    reserved = check_calls(held_out) + setup_calls(config, images, distilled) if held_out else 0
    plan = plan_calls(images, steps, config.batch_size, config.call_budget, setup, batches_queried, reserved)
    if is_main:
        print(
            f"glancemap: {explainer.backbone.name} is a black box: gradient-free training through a surrogate "
            f"(the auxiliary and a readout refitted to the black box's outputs on the masked images every "
            f"{plan.query_every or 'no'} step(s)); {plan.steps} steps"
            + (f" (cut from {steps} to fit the call budget)" if plan.steps < steps else "")
            + f", about {plan.expected_calls} calls"
            + (f" and up to {reserved} for the held-out check" if reserved else "")
            + f", {(plan.expected_calls + reserved) / images:.1f} per image (budget {config.call_budget:g})",
            file=sys.stderr,
        )
    return plan


def train(
    config: TrainConfig,
    resume: bool = False,
    progress_bar: bool = True,
    backbone: Classifier | None = None,
    overwrite: bool = False,
) -> PTameExplainer:
    """Trains a P-TAME head and saves the explainer to ``<out>/explainer``. Returns it (on every rank).

    ``backbone`` replaces the one ``config.backbone`` names (e.g. a randomised
    copy for the sanity check); its name must still match the config's.
    A folder that holds another run's results is refused unless ``resume``
    continues that run or ``overwrite`` replaces it; a second run into a folder
    in use is refused (see :mod:`glancemap.training.outdir`).
    """
    config.validate()
    if backbone is not None and backbone.name != config.backbone:
        raise ValueError(f"backbone {backbone.name!r} does not match config.backbone {config.backbone!r}")
    device = resolve_device(config.device)
    env = setup_distributed(device)
    with claim_folder(Path(config.out), resume, overwrite, env.is_main), stop_on_sigterm() as stop:
        return _train(config, resume, progress_bar, backbone, device, env, stop)


def _train(
    config: TrainConfig,
    resume: bool,
    progress_bar: bool,
    backbone: Classifier | None,
    device,
    env,
    stop: StopRequest,
):
    start_wall = time.time()
    out = Path(config.out)
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
    data = data_fingerprint(files)
    resuming = resume and ckpt_path.exists()
    tensors, meta = load_checkpoint(ckpt_path) if resuming else ({}, {})
    progress = meta.get("progress", {})
    if resuming:
        check_resumable(meta, config, data, ckpt_path)
    # checkpoints keep the start and its readout: a resume rebuilds neither, so calls the backbone no more
    restored = "setup_calls" in progress
    backbone, auxiliary = load_networks(config, device, backbone)
    held_out: list = []
    share = config.holdout
    if share is None:  # by default, check where the start is new: a readout distilled for other classes
        share = 0.0 if auxiliary.class_names == backbone.class_names else HOLDOUT_SHARE
    all_files = files
    if config.init == "aux-cam" and not config.init_from and config.max_steps != 0:  # 0 steps: nothing to check
        files, held_out = holdout_split(files, share, config.seed)
    distilled = None
    if restored and "readout.weight" in tensors:
        distilled = Readout.from_parts(tensors["readout.weight"], tensors["readout.bias"], progress["readout"])
    # the head's draws (its blocks' convolutions) from this state: a start rebuilt after training draws the
    # same, so it is the one `--max-steps 0` writes, on every rank
    head_rng = torch.random.get_rng_state()
    explainer = build_explainer(
        config,
        device,
        None if restored else files,
        backbone=backbone,
        auxiliary=auxiliary,
        distilled=distilled,
        report=env.is_main,
    )
    setup = int(progress["setup_calls"]) if restored else calls_of(explainer.backbone)  # the start's calls
    if config.low_rank is not None:
        trainable = restrict_to_low_rank(explainer.head, config.low_rank)
        if env.is_main:
            print(
                f"glancemap: training a rank-{config.low_rank} change of the projection ({trainable} weights)",
                file=sys.stderr,
            )
    start_state = None
    if held_out:
        start_state = (
            {k[6:]: v for k, v in tensors.items() if k.startswith("start.")}
            if restored
            else {k: v.detach().clone() for k, v in explainer.head.state_dict().items()}
        )
    surrogate = None
    if not explainer.backbone.differentiable:
        if env.enabled:
            raise ValueError("gradient-free training (a black-box backbone) runs in one process, not under torchrun")
        surrogate = Surrogate(explainer.backbone, explainer.features, explainer.start_readout).to(device)
    aux_sides = config.aux_sides(max(explainer.features.input_size))[0]
    dataset = ImageFiles(files, explainer.backbone.preprocessing.train_transform(tuple(config.crop_scale)))  # type: ignore[arg-type]
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
    )
    # a last, partial batch is dropped when a full one exists: with few images it would be a step of one
    # or two images (noisy, and a B x B loss of almost nothing) once per epoch
    drop_last = sampler.num_samples >= config.batch_size
    steps_per_epoch = sampler.num_samples // config.batch_size if drop_last else 1
    if config.epochs is None:
        total_steps = auto_steps(len(files), config.batch_size * env.world_size)
    else:
        total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    plan = None
    if surrogate is not None:
        plan = black_box_plan(config, explainer, total_steps, setup, len(held_out), len(all_files), env.is_main)
        total_steps = plan.steps

    head = explainer.head
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.resolved_weight_decay(), amsgrad=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total_steps, 2))
    step = 0
    if resuming:
        saved_config = meta["config"]
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        if surrogate is not None and "surrogate.weight" in tensors:
            # the refitted readout goes on; the remembered samples do not (the next queries refill them)
            surrogate.weight.copy_(tensors["surrogate.weight"])
            surrogate.bias.copy_(tensors["surrogate.bias"])
        if surrogate is not None:
            # the calls of the first session(s), those after the checkpoint included (the log has them)
            explainer.backbone.model.calls += max(int(progress.get("black_box_calls", 0)), logged_calls(out / LOG_NAME))
        optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        scheduler.load_state_dict(meta["scheduler"])
        step = int(progress["step"])
        if total_steps > scheduler.total_steps:  # --max-steps may stop a run early, not stretch its schedule
            raise ValueError(
                f"--resume: checkpoint {ckpt_path} has a learning-rate schedule of {scheduler.total_steps} steps "
                f"(its run had --max-steps {saved_config.get('max_steps')}); it cannot go on to step {total_steps}"
            )
        changed = apply_optimizer_changes(optimizer, saved_config, asdict(config), asdict(TrainConfig(data=[], out="")))
        if env.is_main:
            dropped = trim_log(out / LOG_NAME, step)
            if changed:
                with open(out / LOG_NAME, "a") as fh:
                    fh.write(json.dumps({"step": step, "event": "resume", "changed": changed}) + "\n")
            print(
                f"glancemap: resumed from {ckpt_path} at step {step}/{total_steps}"
                + (f"; dropped {dropped} log lines past the checkpoint" if dropped else "")
                + "".join(f"; {k} {old} -> {new}" for k, (old, new) in changed.items()),
                file=sys.stderr,
            )
    elif resume and env.is_main:
        dropped = trim_log(out / LOG_NAME, 0)  # steps of a run killed before its first checkpoint
        print(
            f"glancemap: --resume given but no checkpoint in {out} yet; starting at step 0"
            + (f" (dropped {dropped} log lines of the interrupted run)" if dropped else ""),
            file=sys.stderr,
        )

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
    queried = 0  # steps that queried the black box (a surrogate refits every REFIT_EVERY of them)
    step_end = time.perf_counter()
    # one loader for the run: its workers live across epochs (the sampler is read in this process
    # at each epoch's start), because a few hundred images make epochs of a few steps, and starting
    # workers anew each epoch doubled the step time on a 2-core CPU
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate_skip_none,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
    )
    # what a resume needs besides the head: the start the held-out check compares with, and the readout it
    # distilled (rebuilding them would call the backbone again, and a black box's calls are paid for)
    keep: dict[str, torch.Tensor] = {f"start.{k}": v for k, v in (start_state or {}).items()}
    kept_progress: dict = {"setup_calls": setup}
    if explainer.training_info.get("readout"):
        keep |= {"readout.weight": explainer.start_readout.weight, "readout.bias": explainer.start_readout.bias}
        kept_progress["readout"] = explainer.start_readout.scalars()

    def checkpoint() -> None:
        largest = max_abs_weight(head)
        if not math.isfinite(largest):
            raise TrainingDivergedError(
                f"the head's weights became non-finite at step {step}; {checkpoint_advice(ckpt_path)}"
            )
        record = {"step": step, "data": data, "loss": last_terms["loss"], "max_abs_weight": largest} | kept_progress
        extra = dict(keep)
        if surrogate is not None:
            extra |= {"surrogate.weight": surrogate.weight, "surrogate.bias": surrogate.bias}
            record["black_box_calls"] = calls_of(explainer.backbone)
        save_checkpoint(ckpt_path, head, optimizer, scheduler, record, config, extra)

    saved_step, between_steps, out_of_calls = step, True, False
    try:
        while step < total_steps and not out_of_calls:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, skip=batch_in_epoch * config.batch_size)
            for batch in loader:
                if step >= total_steps:
                    break
                # [a readable batch, no stop requested]: every rank must take the same number of steps
                flags = torch.tensor([batch is not None, not stop.requested], device=device).int()
                if env.enabled:
                    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
                readable, go_on = flags.tolist()
                if not go_on:
                    raise KeyboardInterrupt("SIGTERM")  # saved below, as Ctrl-C is
                if not readable:
                    continue
                images = batch[0].to(device, non_blocking=True)
                query = False
                if plan is not None:
                    # only a resume that repeats steps can come here short of calls: the plan fits the budget
                    spent = calls_of(explainer.backbone)
                    if not plan.step_fits(spent):
                        out_of_calls = True
                        break
                    query = plan.query_fits(step, spent, total_steps - step)
                loss, terms = training_step(
                    explainer, model, images, loss_fn, step_aux_size(config, step, aux_sides), surrogate, query
                )
                if not torch.isfinite(loss):
                    terms_text = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                    raise TrainingDivergedError(
                        f"loss became {loss.item()} at step {step + 1} ({terms_text}); {checkpoint_advice(ckpt_path)}"
                    )
                between_steps = False  # the head, optimiser and schedule change together
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                between_steps = True
                last_terms = {"loss": loss.item()} | {k: v.item() for k, v in terms.items()}
                if surrogate is not None:
                    queried += query
                    if query and queried % REFIT_EVERY == 0:
                        last_terms["surrogate_agreement"] = surrogate.agreement_since_refit()
                        surrogate.refit()
                    last_terms["black_box_calls"] = calls_of(explainer.backbone)
                # wall seconds since the previous step ended: loading, the step itself and logging
                now = time.perf_counter()
                step_s, step_end = now - step_end, now
                if env.is_main:
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "lr": scheduler.get_last_lr()[0],
                        "step_s": round(step_s, 3),
                    } | last_terms
                    log.write(json.dumps(record) + "\n")  # type: ignore[union-attr]
                    log.flush()  # type: ignore[union-attr]
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            epoch=epoch,
                            loss=f"{last_terms['loss']:.3f}",
                            ce=f"{last_terms['ce']:.3f}",
                            area=f"{last_terms['area']:.3f}",
                            tv=f"{last_terms['tv']:.3f}",
                            mask=f"{last_terms['mask_mean']:.2f}",
                        )
                    if step % config.checkpoint_every == 0 or step == total_steps:
                        checkpoint()
                        saved_step = step
    except (KeyboardInterrupt, Exception) as exc:
        # Ctrl-C, SIGTERM or a black box's failed call: keep the steps done since the last checkpoint
        if env.is_main and between_steps and step > saved_step and not isinstance(exc, TrainingDivergedError):
            checkpoint()
            if bar is not None:
                bar.close()  # the line below its own, not after the bar
            print(f"glancemap: stopped at step {step}: checkpoint saved, --resume goes on from it", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    if out_of_calls and env.is_main:
        print(
            f"glancemap: the call budget is spent at step {step} of {total_steps} (steps after a checkpoint were "
            "repeated on resume): stopping there",
            file=sys.stderr,
        )
    if env.enabled:
        # BN running statistics are per process; rank 0's are the ones saved
        for buf in head.buffers():
            dist.broadcast(buf, src=0)
    explainer.eval()
    holdout_record = None
    if start_state is not None and step > 0:
        holdout_record = keep_better_head(
            config, device, explainer, start_state, held_out, all_files, head_rng, env.is_main
        )
    fold_low_rank(explainer.head)
    readout = explainer.training_info.get("readout")  # set by build_explainer when it distilled one
    explainer.training_info = {
        "preset": config.preset,
        "loss_weights": config.loss_weights().to_dict(),
        "weight_decay": config.resolved_weight_decay(),
        "init": config.init,
        "head": explainer.head.kind,
        **({"low_rank": config.low_rank} if config.low_rank is not None else {}),
        **({"readout": readout} if readout else {}),
        "train_aux_sides": aux_sides,
        "epochs": config.epochs,
        "steps": step,
        "batch_size": config.batch_size,
        "world_size": env.world_size,
        "lr": config.lr,
        "images": len(files),
        **({"held_out": holdout_record} if holdout_record else {}),
        **(
            {
                "black_box_calls": calls_of(explainer.backbone),
                "call_budget": config.call_budget,
                "surrogate_refits": surrogate.refits,
            }
            if surrogate is not None
            else {}
        ),
        "skipped_files": bad.count,
        "final_terms": last_terms,
        "wall_time_s_last_session": round(time.time() - start_wall, 1),
        "device": str(device),
        "command": config.command,
    }
    if env.is_main:
        explainer.save(out / "explainer")
    if env.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return explainer


def keep_better_head(
    config: TrainConfig,
    device: torch.device,
    explainer: PTameExplainer,
    start_state: dict[str, torch.Tensor],
    held_out: Sequence[Path],
    all_files: Sequence[Path],
    head_rng: torch.Tensor,
    is_main: bool = True,
) -> dict:
    """Scores the trained head and its start (``start_state``) on the ``held_out`` images and leaves the
    better one in ``explainer``: a kept start is rebuilt on ``all_files``, its head drawn from the global
    random state ``head_rng`` (the one the first start was drawn from). Returns the check's record."""
    trained_state = {k: v.detach().clone() for k, v in explainer.head.state_dict().items()}
    trained_score = held_out_score(explainer, held_out)
    explainer.head.load_state_dict(start_state)
    start_score = held_out_score(explainer, held_out)
    kept = "start" if start_score > trained_score else "trained"
    holdout_record = {
        "images": len(held_out),
        "trained": round(trained_score, 4),
        "start": round(start_score, 4),
        "kept": kept,
    }
    if kept == "trained":
        explainer.head.load_state_dict(trained_state)
    else:
        # the held-out images were needed only for the check: the saved start is the one every image
        # makes (its readout distilled and its CAM calibrated on all of them), as `--max-steps 0` makes it
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(head_rng)
            rebuilt = build_explainer(
                config, device, all_files, backbone=explainer.backbone, auxiliary=explainer.auxiliary, report=False
            )
        explainer.head = rebuilt.head.eval()
        explainer.training_info = rebuilt.training_info
        holdout_record["rebuilt_on"] = len(all_files)
    if is_main:
        print(
            f"glancemap: on {len(held_out)} held-out images the trained head scores {trained_score:.3f}, its "
            f"start {start_score:.3f} (removal test, LeRF minus MoRF): saving the "
            + (
                "trained head"
                if kept == "trained"
                else f"start, which training did not improve on, rebuilt on all {len(all_files)} images"
            ),
            file=sys.stderr,
        )
    return holdout_record


def training_recipe(explainer_config: dict) -> dict:
    """The TrainConfig fields an explainer was trained with (head, loss, init, lr, ...), to retrain it alike.

    The inverse of the ``training`` record that :func:`train` writes into the explainer's config.
    """
    info = explainer_config.get("training", {})
    recipe = {"head": explainer_config.get("head", "per-class")}
    for key in ("preset", "loss_weights", "init", "weight_decay", "lr", "train_aux_sides", "low_rank"):
        if key in info:
            recipe["loss" if key == "loss_weights" else key] = info[key]  # the record's one renamed field
    if "loss" in recipe:
        recipe["loss"] = dict(recipe["loss"])
        # records before the blur was the removal term's only fill name it; any other fill is gone
        fill = recipe["loss"].pop("destroy_fill", "blur")
        if fill != "blur":
            raise ValueError(
                f"this explainer was trained with the removal fill {fill!r}, which glancemap no longer has"
            )
    return recipe
