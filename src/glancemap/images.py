"""Image files in, [0,1] tensors out, surviving whatever a real folder holds.

Corrupt, truncated and non-image files are skipped with one warning each and
counted; greyscale, palette, RGBA, CMYK, 16-bit and tiny images are converted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

# never accept silently truncated data: a broken file is reported, not half-used
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


class BadImageError(ValueError):
    """A file that is not a readable image."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB. Alpha is composited onto white; 16-bit and float images are rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 65535.0
        else:  # 32-bit int or float: use the image's own range
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray((arr * 255.0 + 0.5).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, ...
    return img


def load_image(path: str | os.PathLike) -> Image.Image:
    """Reads and fully decodes an image as RGB; raises :class:`BadImageError` with the reason."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                out = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    for w in caught:  # Pillow's own message does not say which file
        if issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn(f"{path}: {w.message}", Image.DecompressionBombWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if min(out.size) < 1:
        raise BadImageError(f"{path}: empty image")
    return out


def _candidate(path: Path) -> bool:
    """Whether a folder entry is offered to the loader: every file, and anything else that is not a plain
    folder (a broken or looping link) or is named like an image (a folder called ``x.jpg``), so
    that it is reported and counted as unreadable rather than dropped without a word."""
    if path.is_file():
        return True
    if path.is_dir():
        return path.suffix.lower() in IMAGE_SUFFIXES
    return path.is_symlink()


def list_images(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Files named by ``inputs`` (files, folders, or ``.txt`` lists of paths), sorted, without duplicates.

    Folders contribute every non-hidden file (not only known suffixes), so that
    a misnamed or broken file is reported instead of silently ignored.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            files.extend(
                f for f in walker if _candidate(f) and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file() and p.suffix == ".txt" and p.suffix.lower() not in IMAGE_SUFFIXES:
            base = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    files.append(q if q.is_absolute() or q.exists() else base / q)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return sorted(dict.fromkeys(files))


@dataclass
class BadFileLog:
    """Warns once per bad file and counts them."""

    seen: dict[str, str] = field(default_factory=dict)

    def report(self, path: Path, reason: str) -> None:
        key = str(path)
        if key not in self.seen:
            self.seen[key] = reason
            warnings.warn(f"skipping {reason}", stacklevel=3)

    @property
    def count(self) -> int:
        return len(self.seen)


def image_batches(
    files: Sequence[Path], transform: Callable, batch_size: int, log: BadFileLog
) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """The readable files of ``files`` in batches: ``(files, (b,3,H,W) tensor)`` per batch of up to
    ``batch_size``; unreadable files are reported to ``log`` and left out (a batch of none is skipped),
    and files the log already holds are not read again."""
    for start in range(0, len(files), batch_size):
        chunk, tensors = [], []
        for f in files[start : start + batch_size]:
            if str(f) in log.seen:
                continue
            try:
                tensors.append(transform(load_image(f)))
                chunk.append(f)
            except BadImageError as exc:
                log.report(f, str(exc))
        if chunk:
            yield chunk, torch.stack(tensors)


def scan_images(files: Sequence[Path], log: BadFileLog | None = None) -> tuple[list[Path], BadFileLog]:
    """Keeps the files that decode fully; the rest are warned about once and counted in the log."""
    log = log or BadFileLog()
    good = []
    for f in files:
        try:
            load_image(f)
        except BadImageError as exc:
            log.report(f, str(exc))
            continue
        good.append(f)
    return good, log


class ImageFiles(torch.utils.data.Dataset):
    """Images as transformed tensors; ``None`` for a file that broke after the scan.

    Use :func:`collate_skip_none` as the DataLoader's ``collate_fn``.
    """

    def __init__(self, files: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.files = list(files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            img = load_image(self.files[index])
        except BadImageError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
            return None
        return self.transform(img), index


def collate_skip_none(batch: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    images = torch.stack([b[0] for b in batch])
    indices = torch.tensor([b[1] for b in batch])
    return images, indices
