"""Train/dev file lists of the shared ImageNet sample, as every measurement in docs/ used them.

    python experiments/sample_split.py ../shared/data/imagenet-sample --out splits

``train.txt``: images whose ``labels.csv`` index has ``index % 5 != 0`` (800);
``dev.txt``: the rest (200), whose classes never occur in training.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def imagenet_sample_split(root: str | os.PathLike, split: str) -> list[Path]:
    """The sample's files of ``split``: ``train`` = ``index % 5 != 0``, ``dev`` = ``index % 5 == 0``."""
    if split not in ("train", "dev"):
        raise ValueError("split must be 'train' or 'dev'")
    root = Path(root)
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    in_dev = [int(r["index"]) % 5 == 0 for r in rows]
    return [root / r["file"] for r, dev in zip(rows, in_dev) if dev == (split == "dev")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder with labels.csv")
    ap.add_argument("--out", default="splits")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        files = imagenet_sample_split(args.root, split)
        (out / f"{split}.txt").write_text("".join(f"{Path(f).resolve()}\n" for f in files))
        print(f"{split}: {len(files)} files -> {out / (split + '.txt')}")


if __name__ == "__main__":
    main()
