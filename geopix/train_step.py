"""One optimisation step of a training run: the pix2pix losses on a batch, applied to the networks.

The generator learns from L1 (the ``tanh`` head) or cross-entropy against the palette colours
(the ``palette`` head; ``partial_label_loss`` where vector labels know only a set of classes
per pixel), plus the conditional GAN loss when the run has a discriminator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geopix.config import TrainConfig
from geopix.models.checkpoint import ModelSpec
from geopix.train_state import RunState


def gan_loss(pred: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if mode == "lsgan":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a *set* of allowed palette colours per pixel (N,K,H,W bool).

    Each pixel's loss is ``-log Σ_{k allowed} p_k``: a one-colour set is ordinary cross-entropy,
    and "not a building" (a building-only layer outside its polygons) pushes only the building
    colours down.  Pixels whose set is empty (unknown) or full (anything) are left out, and
    give exactly zero gradient: they are masked *before* the log-sum-exp, so no ``-inf``
    (whose gradient would be NaN) is ever formed.
    """
    logp = logits.float().log_softmax(1)
    k = allowed.shape[1]
    n_allowed = allowed.sum(1)
    known = (n_allowed > 0) & (n_allowed < k)
    safe = allowed | ~known[:, None]  # unknown pixels: the full set, a finite log-sum-exp of 0
    ll = logp.masked_fill(~safe, -math.inf).logsumexp(1)
    weight = known.float()
    return -(ll * weight).sum() / weight.sum().clamp(min=1.0)


def fake_rgb(spec: ModelSpec, out: torch.Tensor) -> torch.Tensor:
    """Generator output as RGB in [-1, 1] (soft palette mix, so the GAN can push on it)."""
    if spec.head == "tanh":
        return out
    pal = torch.tensor(spec.palette, dtype=out.dtype, device=out.device) / 127.5 - 1.0
    return torch.einsum("nkhw,kc->nchw", out.softmax(1), pal)


def train_step(
    state: RunState, spec: ModelSpec, cfg: TrainConfig, device: torch.device, batch: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Update the discriminator (if any), then the generator, on ``batch``; the losses by name."""
    mf = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    a = batch["a"].to(device, memory_format=mf)
    b = batch["b"].to(device, memory_format=mf)
    amp = device.type == "cuda" and cfg.amp
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = state.G_train(a)
    out = out.float()
    fake = fake_rgb(spec, out)
    logs: dict[str, float] = {}
    if state.D_train is not None:
        for p in state.D.parameters():
            p.requires_grad_(True)
        state.opt_D.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred_fake = state.D_train(torch.cat([a, fake.detach()], 1)).float()
            pred_real = state.D_train(torch.cat([a, b], 1)).float()
        loss_D = 0.5 * (gan_loss(pred_fake, False, cfg.gan_mode) + gan_loss(pred_real, True, cfg.gan_mode))
        loss_D.backward()
        state.opt_D.step()
        for p in state.D.parameters():
            p.requires_grad_(False)
        logs["D"] = loss_D.item()
    state.opt_G.zero_grad(set_to_none=True)
    loss_G = torch.zeros((), device=device)
    if state.D_train is not None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = state.D_train(torch.cat([a, fake], 1)).float()
        gan = gan_loss(pred, True, cfg.gan_mode)
        loss_G = loss_G + cfg.lambda_gan * gan
        logs["G_gan"] = gan.item()
    if spec.head == "palette":
        if "allowed" in batch:
            ce = partial_label_loss(out, batch["allowed"].to(device))
        else:
            ce = F.cross_entropy(out, batch["label"].to(device))
        loss_G = loss_G + cfg.lambda_ce * ce
        logs["G_ce"] = ce.item()
    l1 = F.l1_loss(fake, b)
    if spec.head == "tanh":
        loss_G = loss_G + cfg.lambda_l1 * l1
    logs["G_l1"] = l1.item()
    loss_G.backward()
    state.opt_G.step()
    return logs
