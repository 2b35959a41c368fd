"""Train/dev file lists of the shared ImageNet sample, as every measurement in docs/ used them.

    python experiments/sample_split.py ../shared/data/imagenet-sample --out splits

``train.txt``: images whose ``labels.csv`` index has ``index % 5 != 0`` (800);
``dev.txt``: the rest (200), whose classes never occur in training.
``rin9_train.txt`` / ``rin9_dev.txt``: the images of each split whose class lies in one of the
9 RestrictedImageNet superclasses (161 / 42), for the ``restricted_imagenet9`` backbone.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def imagenet_sample_split(root: str | os.PathLike, split: str, restricted: bool = False) -> list[Path]:
    """The sample's files of ``split``: ``train`` = ``index % 5 != 0``, ``dev`` = ``index % 5 == 0``;
    with ``restricted``, only those whose class is in a RestrictedImageNet-9 superclass."""
    if split not in ("train", "dev"):
        raise ValueError("split must be 'train' or 'dev'")
    root = Path(root)
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [int(r["index"]) % 5 == 0 if split == "dev" else int(r["index"]) % 5 != 0 for r in rows]
    if restricted:
        from glancemap.models.grouped import RESTRICTED_IMAGENET9

        ranges = RESTRICTED_IMAGENET9.values()
        keep = [k and any(lo <= int(r["index"]) <= hi for lo, hi in ranges) for k, r in zip(keep, rows)]
    return [root / r["file"] for r, k in zip(rows, keep) if k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder with labels.csv")
    ap.add_argument("--out", default="splits")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for prefix, restricted in (("", False), ("rin9_", True)):
        for split in ("train", "dev"):
            files = imagenet_sample_split(args.root, split, restricted)
            path = out / f"{prefix}{split}.txt"
            path.write_text("".join(f"{Path(f).resolve()}\n" for f in files))
            print(f"{prefix}{split}: {len(files)} files -> {path}")


if __name__ == "__main__":
    main()
