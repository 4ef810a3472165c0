"""Palette logits → map colours at a fraction of the network's cost.

``generator.palette_to_rgb`` states the decoding (argmax, softmax blend, ``keep_class``) for any
tensor; this is the same function compiled for the hot path.  Everything that depends on the
model alone (the palette with a column of ones, the offsets, each colour's class, the class
half-spaces) is computed once per model, and the pixels are decoded as rows of ``K`` logits
(channels last), so the softmax blend and the normaliser are one matrix product and the
class test is a linear one: ``target · (c_j − c_a) > offset_aj`` (``keep_class``'s cells).
Only the few pixels that cross a cell go through ``keep_class``'s clamp, the same arithmetic
as there.  Rows are decoded in cache-sized runs.

It equals ``palette_to_rgb`` to float rounding (the blend's sums run in another order): within
1e-3 of a 0..255 unit, so an 8-bit map differs by at most one unit, and only where a value
sits on a rounding edge (tests/test_decode.py holds both).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch


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
        if self.keep:
            cc = torch.as_tensor(np.asarray(class_colours, np.float32))
            self.cc = cc
            self.owner = torch.cdist(pal, cc).argmin(1)  # (K,): each colour's class
            self.normal = cc[None, :, :] - cc[:, None, :]  # (C, C, 3): from class a towards class j
            width = self.normal.norm(dim=-1)
            self.width = width
            sq = cc.pow(2).sum(1)
            self.offset = (sq[None, :] - sq[:, None]) / 2 - width  # keep_class's half-space offsets
            # Per palette colour k (class a): the squared distance from k to the nearest face of
            # a's cell (with keep_class's margin); a blend nearer than that to k stays in class a.
            normal, offset = self.normal[self.owner], self.offset[self.owner]  # (K, C, 3), (K, C)
            slack = offset - (normal * pal[:, None, :]).sum(-1)
            reach = slack / normal.norm(dim=-1).clamp(min=1e-12)
            reach[torch.arange(self.k), self.owner] = float("inf")
            self.reach2 = (reach.min(1).values.clamp(min=0) * (1 - 1e-4)) ** 2  # a hair inside: rounding

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
            self._image(planes[i], out[i])
        return out.view(n, 3, h, w)

    def _buffers(self, p: int) -> dict[str, torch.Tensor]:
        """This thread's scratch planes for ``p`` pixels (threads of a worker share the decoder)."""
        held = getattr(self._local, "buffers", None)
        if held is None or held["max"].shape[0] != p:
            held = {
                "shifted": torch.empty(self.k, p),
                "weights": torch.empty(self.k, p),
                "max": torch.empty(p),
                "eq": torch.empty(p, dtype=torch.bool),
                "idx": torch.empty(p, dtype=torch.long),
                "sums": torch.empty(4, p),
                "start": torch.empty(3, p),
                "step": torch.empty(3, p),
                "d2": torch.empty(p),
                "r2": torch.empty(p),
            }
            self._local.buffers = held
        return held

    def _image(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """(K, P) logits → ``out`` (3, P) colours."""
        b = self._buffers(x.shape[1])
        shifted = torch.add(x, self.bias[:, None], out=b["shifted"]) if self.bias is not None else x
        top = torch.amax(shifted, 0, out=b["max"])
        idx = b["idx"].fill_(self.k - 1)
        for k in range(self.k - 2, -1, -1):  # the first largest, as argmax: fast on planes
            idx.masked_fill_(torch.eq(shifted[k], top, out=b["eq"]), k)
        start = torch.index_select(self.pal_t, 1, idx, out=b["start"])
        if self.sharpness <= 0:
            out.copy_(start)
            return
        blend = shifted
        if self.bias_decides:
            blend, top = x, torch.amax(x, 0, out=b["max"])
        e = torch.sub(blend, top, out=b["weights"])
        # Weights below e^-80 change no sum; stopping there keeps exp out of slow subnormals.
        e.mul_(self.sharpness).clamp_(min=-80.0).exp_()
        sums = torch.matmul(self.pal1_t, e, out=b["sums"])  # (4, P): Σ w·colour and Σ w
        target = sums[:3].div_(sums[3])
        if not self.keep:
            out.copy_(target)
            return
        step = torch.sub(target, start, out=b["step"])
        d2 = torch.sum(step * step, 0, out=b["d2"])
        # Inside the ball that fits its colour's cell: certainly in its class, t = 1.  The rest
        # (few) get keep_class's exact step, which is also 1 for those that stay inside.
        crossing = torch.gt(d2, torch.index_select(self.reach2, 0, idx, out=b["r2"]), out=b["eq"]).nonzero()[:, 0]
        if len(crossing):
            t = self._clamp(start[:, crossing].T, target[:, crossing].T, self.owner[idx[crossing]])
            step[:, crossing] *= t
        torch.add(start, step, out=out)

    def _clamp(self, s: torch.Tensor, g: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """keep_class's step for the crossing pixels: the smallest crossing of their cell's half-spaces."""
        n, b = self.normal[c], self.offset[c]  # (M,C,3), (M,C)
        slack = (b - (n * s[:, None, :]).sum(-1)).clamp(min=0)
        toward = (n * (g - s)[:, None, :]).sum(-1)
        bound = torch.where(toward > 0, slack / toward.clamp(min=1e-12), torch.full_like(slack, float("inf")))
        return bound.min(-1).values.clamp(max=1.0)
