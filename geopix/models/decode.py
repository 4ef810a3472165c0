"""Palette logits → map colours at a fraction of the network's cost.

``generator.palette_to_rgb`` states the decoding (argmax, softmax blend, ``keep_class``) for any
tensor; this is the same function compiled for the CPU hot path.  Everything that depends on the
model alone is computed once per model: the palette with a row of ones (the blend and its
normaliser are one matrix product), and a table of each palette colour's constants (its colour,
its class's colour, and ``keep_class``'s per-face projections and slacks).  Pixels are decoded
as planes (NCHW: one contiguous plane per logit), in cache-sized runs, without a per-pixel
gather: a pixel's table column comes from one matrix product with its argmax indicator.
``keep_class``'s clamp is computed for every pixel at once (it is 1 for a blend inside its class).

It equals ``palette_to_rgb`` to float rounding (sums run in another order): within 1e-2 of a
0..255 unit, so an 8-bit map differs by at most one unit, and only where a value sits on a
rounding edge; argmax alone (sharpness 0) is bit for bit (tests/test_decode.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

#: Pixels decoded at a time: their planes stay in the L2 cache between the steps (measured on
#: sat2map, 1 thread, ms per 256² tile: 65536 px 3.7, 32768 3.4, 16384 2.9, 8192 3.2).
CHUNK = 16384


class PaletteDecoder:
    """``decoder(logits)``: (N, K, H, W) palette logits (any memory format) → (N, 3, H, W) fp32 0..255."""

    def __init__(
        self,
        palette: Sequence[Sequence[float]],
        sharpness: float = 0.0,
        bias: Sequence[float] = (),
        class_colours: np.ndarray | torch.Tensor | None = None,
        *,
        bias_decides: bool = False,
    ) -> None:
        pal = torch.as_tensor(np.asarray(palette, np.float32))
        self.pal = pal
        self.k = pal.shape[0]
        self.sharpness = float(sharpness)
        self.bias = torch.as_tensor(np.asarray(bias, np.float32)) if len(bias) else None
        self.pal_t = pal.T.contiguous()  # (3, K)
        self.pal1_t = torch.cat([self.pal_t, torch.ones(1, self.k)], 0)  # (4, K): blend and its normaliser
        self._local = threading.local()
        self.keep = class_colours is not None
        self.bias_decides = bias_decides and self.keep
        table = [self.pal_t]
        if self.keep:
            cc = torch.as_tensor(np.asarray(class_colours, np.float32))
            self.cc = cc
            self.owner = torch.cdist(pal, cc).argmin(1)  # (K,): each colour's class
            normal = cc[None, :, :] - cc[:, None, :]  # (C, C, 3): from class a towards class j
            width = normal.norm(dim=-1)
            sq = cc.pow(2).sum(1)
            offset = (sq[None, :] - sq[:, None]) / 2 - width  # keep_class's half-space offsets
            # Per palette colour k (class a), per class j: (c_j − c_a)·k and keep_class's slack of
            # k, none towards its own class (no face there).
            normal, offset = normal[self.owner], offset[self.owner]  # (K, C, 3), (K, C)
            start_proj = (normal * pal[:, None, :]).sum(-1)  # (K, C)
            slack = (offset - start_proj).clamp(min=0)
            slack[torch.arange(self.k), self.owner] = 1e30  # "none": finite, so 0 · it is 0 in _gather
            table += [cc[self.owner].T, start_proj.T, slack.T]
        #: (rows + 1, K): a palette colour's constants, one column each (and a row of ones),
        #: fetched per pixel in one matrix product (``_gather``).
        self.table1 = torch.cat([*table, torch.ones(1, self.k)], 0).contiguous()

    @classmethod
    def for_spec(cls, spec) -> PaletteDecoder:
        """The decoder of a palette-head :class:`~geopix.models.checkpoint.ModelSpec`."""
        from geopix.style import COLOURS

        return cls(
            spec.palette,
            spec.palette_sharpness,
            spec.palette_bias,
            COLOURS if spec.palette_keep_class else None,
            bias_decides=spec.palette_bias_decides,
        )

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        n, k, h, w = logits.shape
        if k != self.k:
            raise ValueError(f"{k} logit channels for a palette of {self.k} colours")
        planes = logits.float().contiguous().view(n, k, h * w)  # NCHW: one contiguous plane per colour
        out = torch.empty(n, 3, h * w)
        for i in range(n):
            for s in range(0, h * w, CHUNK):
                self._pixels(planes[i, :, s : s + CHUNK], out[i, :, s : s + CHUNK])
        return out.view(n, 3, h, w)

    def _buffers(self, p: int) -> dict[str, torch.Tensor]:
        """This thread's scratch planes for ``p`` pixels (threads of a worker share the decoder)."""
        held = getattr(self._local, "buffers", {})
        if p not in held:
            held[p] = {
                "shifted": torch.empty(self.k, p),
                "diff": torch.empty(self.k, p),
                "hits": torch.empty(self.k, p),
                "max": torch.empty(p),
                "sums": torch.empty(4, p),
                "rows": torch.empty(self.table1.shape[0], p),
            }
            if self.keep:
                held[p] |= {"proj": torch.empty(self.cc.shape[0], p), "own": torch.empty(p)}
            self._local.buffers = held
        return held[p]

    def _gather(self, diff: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each pixel's column of the table for the first of its largest logits (argmax's choice),
        from ``diff`` = shifted logits − their maximum (≤ 0, 0 at the maximum).

        A gather per pixel is slow on planes (and torch's argmax across them slower); here a plane
        at the maximum is 1 (sign + 1), 0 elsewhere, and one matrix product with the table (plus a
        row of ones that counts the maxima) gives the column.  Exact ties (rare) are redone by index."""
        hits = torch.sign(diff, out=b["hits"]).add_(1.0)
        rows = torch.matmul(self.table1, hits, out=b["rows"])
        if rows[-1].max() > 1:  # a tie: argmax's first index for those pixels
            tied = (rows[-1] > 1).nonzero()[:, 0]
            rows[:, tied] = self.table1[:, diff[:, tied].argmax(0)]
        return rows[:-1]

    def _pixels(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """(K, P) logits → ``out`` (3, P) colours."""
        b = self._buffers(x.shape[1])
        shifted = torch.add(x, self.bias[:, None], out=b["shifted"]) if self.bias is not None else x
        diff = torch.sub(shifted, torch.amax(shifted, 0, out=b["max"]), out=b["diff"])
        rows = self._gather(diff, b)  # every per-colour constant at once
        start = rows[:3]
        if self.sharpness <= 0:
            out.copy_(start)
            return
        if self.bias_decides:
            diff = torch.sub(x, torch.amax(x, 0, out=b["max"]), out=b["diff"])
        # Weights below e^-80 change no sum; stopping there keeps exp out of slow subnormals.
        e = diff.mul_(self.sharpness).clamp_(min=-80.0).exp_()
        sums = torch.matmul(self.pal1_t, e, out=b["sums"])  # (4, P): Σ w·colour and Σ w
        target = sums[:3].div_(sums[3])
        if not self.keep:
            out.copy_(target)
            return
        # keep_class on every pixel at once.  toward_j = (c_j − c_a)·(target − start) and the
        # slack of start (a palette colour) come from the table; t = the smallest slack / toward
        # over the faces it moves towards, at most 1 (a blend inside its cell: t = 1).
        c = self.cc.shape[0]
        own_colour, start_proj, slack = rows[3:6], rows[6 : 6 + c], rows[6 + c :]
        toward = torch.matmul(self.cc, target, out=b["proj"])  # c_j · target
        toward -= torch.sum(own_colour * target, 0, out=b["own"])  # c_a · target
        toward -= start_proj
        bound = slack.div_(toward.clamp_(min=0.0))  # x/0 = inf: a face it does not move towards
        t = bound.nan_to_num_(nan=float("inf")).amin(0).clamp_(max=1.0)  # 0/0: on a face, moving along it
        torch.addcmul(start, t[None], target - start, out=out)
