"""What a training run shows of itself: ``log.csv`` rows (and TensorBoard scalars), sample grids, the loss plot.

Each is written whole (a row in one write; images beside, then renamed), so an interrupted run
leaves no half row or half image.  Optional extras are skipped with a note: TensorBoard when
it is not installed, the plot without matplotlib (``pip install 'geopix[train]'``).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from geopix.config import TrainConfig
from geopix.data.pairs import PairRef, read_pair, resize_square
from geopix.infer import Predictor
from geopix.models.checkpoint import ModelSpec
from geopix.output import written_whole
from geopix.train_state import LOG

log = logging.getLogger("geopix.train")

#: The columns of ``log.csv``; a row's other keys (e.g. ``bn_recal_s``) go to the log only.
LOG_FIELDS = ["epoch", "seconds", "lr", "D", "G_gan", "G_l1", "G_ce"]


def log_epoch(run_dir: Path, row: dict[str, float]) -> None:
    """Append one epoch's row to ``log.csv``, the ``geopix.train`` logger and TensorBoard (if installed)."""
    path = run_dir / LOG
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=LOG_FIELDS, extrasaction="ignore")
    if not path.exists():
        w.writeheader()
    w.writerow(row)
    with path.open("a", newline="") as f:
        f.write(text.getvalue())  # one write: an interrupt leaves no half row
    log.info("epoch " + " ".join(f"{k}={v}" for k, v in row.items()))
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional (geopix[train]), and slow to import
    except ImportError:
        return
    with SummaryWriter(str(run_dir / "tb")) as tb:
        for k, v in row.items():
            if k != "epoch":
                tb.add_scalar(k, v, int(row["epoch"]))


@torch.no_grad()
def sample_grid(
    run_dir: Path,
    epoch: int,
    G: nn.Module,
    spec: ModelSpec,
    device: torch.device,
    pairs: list[PairRef],
    cfg: TrainConfig,
    n: int = 4,
) -> None:
    """``samples_epochNNN.png``: input | output | target for the first ``n`` training pairs (centre crops)."""
    G.eval()
    predictor = Predictor(spec, G, device)
    rows = []
    for i in range(min(n, len(pairs))):
        a, b = read_pair(pairs[i], cfg.direction)
        a, b = resize_square(a, cfg.load_size), resize_square(b, cfg.load_size)
        c = (cfg.load_size - cfg.crop_size) // 2
        a = a[c : c + cfg.crop_size, c : c + cfg.crop_size]
        b = b[c : c + cfg.crop_size, c : c + cfg.crop_size]
        fake = predictor.predict_batch(a[None])[0]
        rows.append(np.concatenate([a, fake, b], axis=1))
    with written_whole(run_dir / f"samples_epoch{epoch:03d}.png") as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")
    G.train()


def plot_losses(run_dir: Path, history: list[dict[str, float]]) -> None:
    """``losses.png``: each loss per epoch (skipped with a warning without matplotlib)."""
    try:
        import matplotlib  # optional (geopix[train])

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: skipping the loss plot (pip install 'geopix[train]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("G_l1", "G_ce", "G_gan", "D"):
        ys = [r[key] for r in history if key in r]
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    with written_whole(run_dir / "losses.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
