"""Run by the DDP test under torchrun: trains as the CLI does, then writes this rank's final head.

The library saves only rank 0's explainer; each rank's own weights are what the
test compares, so writing them is the test's job, not the trainer's.
"""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from glancemap.cli import build_parser, train_config
from glancemap.training import train

if __name__ == "__main__":
    import torch.distributed as dist

    images, out = sys.argv[1], Path(sys.argv[2])
    args = build_parser().parse_args(["train", images, "--out", str(out), *sys.argv[3:]])
    rank = int(os.environ["RANK"])
    explainer = train(train_config(args), progress_bar=False)  # destroys the process group when it ends
    state = {k: v.detach().cpu().contiguous() for k, v in explainer.head.state_dict().items()}
    save_file(state, str(out / f"rank{rank}_head.safetensors"))
    assert not dist.is_initialized()
