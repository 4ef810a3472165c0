"""A training run's resumable state: its folder, networks, optimisers, schedules, RNG and epoch.

A run directory holds everything: ``state.pt`` (weights, optimisers, schedulers, RNG, the
epoch; loaded with ``weights_only=True``) and ``generator.safetensors`` (a self-describing
checkpoint usable by ``geopix render`` at any time), beside what ``train_report`` writes.
``RunState.load`` continues a run exactly: same weights, same optimiser moments, same random
draws.  Every file appears complete or not at all (written beside, then renamed).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geopix.config import TrainConfig
from geopix.errors import OutputExistsError, ResumeError
from geopix.models.checkpoint import ModelSpec, save_checkpoint
from geopix.models.generator import NLayerDiscriminator, init_weights
from geopix.output import written_whole

STATE = "state.pt"
GENERATOR = "generator.safetensors"
LOG = "log.csv"
#: What a run writes into its folder: ``--overwrite`` removes these and nothing else.
RUN_FILES = (STATE, GENERATOR, LOG, "losses.png", "samples_epoch*.png", "tb", "*.partial")
#: Options a resumed run must share with the run it continues (else the state does not fit).
RESUME_KEYS = ("ngf", "num_downs", "norm", "head", "direction", "palette_size", "gan_mode", "crop_size")


def run_files(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir`` (empty when there is none)."""
    return sorted(p for pattern in RUN_FILES for p in Path(run_dir).glob(pattern))


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to train into another run's folder unless told to continue it or replace it.

    Without this a new run overwrote state.pt, appended to the old log.csv (epochs 1, 2, 1) and
    left stale samples.  ``overwrite`` removes only the run's own files (see ``RUN_FILES``).
    """
    existing = run_files(run_dir)
    if not existing or resume:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{run_dir} already holds a training run ({', '.join(p.name for p in existing[:3])}); pass --resume to "
            "continue it, --overwrite to replace it, or choose another --run-dir"
        )
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def lr_rule(cfg: TrainConfig):
    """The learning-rate factor per epoch: constant for ``epochs``, then a linear decay to 0."""

    def rule(epoch: int) -> float:
        return 1.0 - max(0, epoch - cfg.epochs + 1) / float(cfg.epochs_decay + 1)

    return rule


def _rng_state() -> dict[str, torch.Tensor]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
        "python": torch.tensor(np.frombuffer(json.dumps(random.getstate()).encode(), dtype=np.uint8).copy()),
    }


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = json.loads(bytes(state["numpy"].numpy()).decode())
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = json.loads(bytes(state["python"].numpy()).decode())
    random.setstate((py[0], tuple(py[1]), py[2]))


@dataclass
class RunState:
    """The networks being trained, their optimisers and schedules, and how far the run got.

    ``G_train`` / ``D_train`` are what the step calls: the networks themselves, or their
    ``DistributedDataParallel`` wrappers under torchrun.
    """

    G: nn.Module
    opt_G: torch.optim.Optimizer
    sched_G: torch.optim.lr_scheduler.LambdaLR
    G_train: nn.Module
    D: nn.Module | None = None
    opt_D: torch.optim.Optimizer | None = None
    sched_D: torch.optim.lr_scheduler.LambdaLR | None = None
    D_train: nn.Module | None = None
    epoch: int = 0  # epochs completed
    saved_epoch: int | None = None  # the epoch state.pt holds, once this run wrote or read it
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def build(
        cls, cfg: TrainConfig, spec: ModelSpec, device: torch.device, world: int, init: nn.Module | None = None
    ) -> RunState:
        """Fresh networks for ``spec`` (the generator starts from ``init``'s weights when given)."""
        G: nn.Module = spec.build()
        init_weights(G)
        if init is not None:
            G.load_state_dict(init.state_dict())
        G.to(device)
        D: nn.Module | None = None
        if cfg.use_gan:
            D = NLayerDiscriminator(6, cfg.ndf, 3, cfg.norm if cfg.norm != "none" else "none")
            init_weights(D)
            D.to(device)
        if device.type == "cpu":
            G.to(memory_format=torch.channels_last)
            if D is not None:
                D.to(memory_format=torch.channels_last)
        opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, lr_rule(cfg))
        opt_D = sched_D = None
        if D is not None:
            opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
            sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, lr_rule(cfg))
        G_train, D_train = G, D
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            G_train = nn.parallel.DistributedDataParallel(G, device_ids=ids)
            if D is not None:
                D_train = nn.parallel.DistributedDataParallel(D, device_ids=ids)
        return cls(G, opt_G, sched_G, G_train, D, opt_D, sched_D, D_train)

    def state_dict(self, cfg: TrainConfig) -> dict:
        state = {
            "G": self.G.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "epoch": self.epoch,
            "rng": _rng_state(),
            "config": json.dumps(asdict(cfg), default=str),
            "history": json.dumps(self.history),
        }
        if self.D is not None:
            state |= {"D": self.D.state_dict(), "opt_D": self.opt_D.state_dict(), "sched_D": self.sched_D.state_dict()}
        return state

    def save(self, run_dir: Path, cfg: TrainConfig, spec: ModelSpec, rank: int = 0) -> None:
        """``state.pt`` and ``generator.safetensors`` for the current epoch (rank 0 writes them)."""
        if rank != 0:
            self.saved_epoch = self.epoch
            return
        with written_whole(run_dir / STATE) as tmp:
            torch.save(self.state_dict(cfg), tmp)
        self.saved_epoch = self.epoch  # only now does state.pt hold this epoch
        training = {
            "epochs": self.epoch,
            "command": cfg.command,
            "recipe": cfg.recipe,
            "config": asdict(cfg),
            "history_tail": self.history[-1:],
        }
        spec = replace(spec, training=json.dumps(training, default=str))
        save_checkpoint(self.G, spec, run_dir / GENERATOR)

    def load(self, path: Path, cfg: TrainConfig, device: torch.device) -> None:
        """Continue from ``path`` (a ``state.pt``) with this run's options; refuse one that does not fit."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:
            raise ResumeError(f"cannot resume from {path}: {exc}; delete it or pick another --run-dir") from exc
        saved = json.loads(state["config"])
        for key in RESUME_KEYS:
            if str(saved.get(key)) != str(getattr(cfg, key)):
                was, now = saved.get(key), getattr(cfg, key)
                raise ResumeError(f"cannot resume {path}: it was trained with {key}={was!r}, now {now!r}")
        self.G.load_state_dict(state["G"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.sched_G.load_state_dict(state["sched_G"])
        if self.D is not None:
            self.D.load_state_dict(state["D"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.sched_D.load_state_dict(state["sched_D"])
        self.epoch = int(state["epoch"])
        self.saved_epoch = self.epoch
        self.history = json.loads(state["history"])
        _set_rng_state(state["rng"])
        # The optimisers come back with the lr of the *saved* schedule; recompute it from this
        # run's --lr/--epochs/--epochs-decay so extending a run (more epochs) really trains.
        # With the same options this gives the very same float, so resume stays exact.
        lr = cfg.lr * lr_rule(cfg)(self.epoch)
        for opt, sched in ((self.opt_G, self.sched_G), (self.opt_D, self.sched_D)):
            if opt is not None and sched is not None:
                sched.base_lrs = [cfg.lr] * len(opt.param_groups)
                for group in opt.param_groups:
                    group["lr"], group["initial_lr"] = lr, cfg.lr
                sched._last_lr = [lr] * len(opt.param_groups)
