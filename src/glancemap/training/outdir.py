"""A run's output folder: who may write into it, and what a resumed run must agree with.

A folder that holds another run's results is refused unless the caller resumes
that run or asks to overwrite it; a lock refuses a second run into the same
folder while the first is alive. The lock is an ``flock`` on ``<out>/.lock``,
which the operating system releases when the process ends, however it ends,
so a lock left by a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME, LOG_NAME

LOCK_NAME = ".lock"
EXPLAINER_DIR = "explainer"


class FolderInUseError(RuntimeError):
    """Another live training run holds the output folder."""


def results_in(out: Path) -> list[str]:
    """The names of a previous run's results in ``out`` (checkpoint, log, saved explainer)."""
    names = [CHECKPOINT_NAME, LOG_NAME, f"{EXPLAINER_DIR}/config.json"]
    return [n for n in names if (out / n).exists()]


@contextlib.contextmanager
def claim_folder(out: Path, resume: bool, overwrite: bool, is_main: bool = True) -> Iterator[None]:
    """Holds ``out`` for one run: locked, stale temporary files removed, and refused when it holds
    another run's results unless ``resume`` (continue that run) or ``overwrite`` (delete them first).

    Only the main process of a distributed run checks, locks and deletes.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not is_main:
        yield
        return
    import fcntl

    fh = open(out / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise FolderInUseError(
                f"{out} is in use by another training run (pid {holder}); wait for it to end or pick another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        for tmp in [*out.glob("*.tmp"), *(out / EXPLAINER_DIR).glob("*.tmp")]:
            tmp.unlink()  # written by a run killed mid-write; never read
        found = results_in(out)
        if found and not resume:
            if not overwrite:
                raise FileExistsError(
                    f"{out} holds another run's results ({', '.join(found)}); pass --resume to continue that run "
                    "or --overwrite to replace it"
                )
            for name in (CHECKPOINT_NAME, LOG_NAME):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / EXPLAINER_DIR, ignore_errors=True)
        yield
    finally:
        fh.close()  # releases the lock


def data_fingerprint(files: Sequence[Path]) -> dict:
    """What a resumed run must train on: how many images, and a hash of their paths and sizes."""
    h = hashlib.sha256()
    for f in sorted(str(Path(f).resolve()) for f in files):
        h.update(f.encode())
        h.update(str(os.path.getsize(f)).encode())
    return {"images": len(files), "sha256": h.hexdigest()[:16]}
