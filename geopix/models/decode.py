"""Palette logits → map colours at a fraction of the network's cost.

``generator.palette_to_rgb`` states the decoding (argmax, softmax blend, ``keep_class``) for any
tensor; this is the same function compiled for the CPU hot path.  Everything that depends on the
model alone is computed once per model: the palette with a row of ones (the blend and its
normaliser are one matrix product), and per palette colour its distance to the nearest face of
its class's cell.  Pixels are decoded as planes (NCHW: one contiguous plane per logit), in
cache-sized runs, without a per-pixel gather: a pixel's colour comes from one matrix product with
its argmax indicator.  ``keep_class``'s clamp can only act on a pixel whose blend moved farther
from its palette colour than that distance (a tenth of the pixels of real tiles); only those are
gathered and clamped.

The int8 graph can do the first step itself (``prescale``): it outputs (logits + bias) · sharpness
· log2(e), fused into its last layer, and the decoder (``prescaled=True``) then adds and scales
nothing — one pass over the logits less (measured on sat2map: 1.80 → 1.61 ms per 256² tile).

It equals ``palette_to_rgb`` to float rounding (sums run in another order): within 1e-2 of a
0..255 unit, so an 8-bit map differs by at most one unit, and only where a value sits on a
rounding edge; argmax alone (sharpness 0) is bit for bit (tests/test_decode.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from geopix.models.generator import class_faces

#: Pixels decoded at a time: their planes stay in the L2 cache between the steps, and there are
#: few enough runs that torch's per-call overhead stays small (measured on sat2map's prescaled
#: int8 logits, 1 thread, ms per 256² tile: 65536 px 1.74, 32768 1.70, 16384 1.80).
CHUNK = 32768
#: The inside-the-cell test runs on float32 sums: a pixel this close to its bound is clamped
#: anyway (the clamp then returns t = 1 where it truly is inside).
INSIDE_MARGIN = 1.0 - 1e-4
LOG2_E = 1.4426950408889634


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
        prescaled: bool = False,
    ) -> None:
        """``prescaled``: the logits arrive as ``prescale`` leaves them (the bias added and the
        sharpness applied); impossible with ``bias_decides``, which blends the unshifted logits."""
        if prescaled and bias_decides and class_colours is not None:
            raise ValueError("prescaled logits carry the bias, which bias_decides must leave out of the blend")
        pal = torch.as_tensor(np.asarray(palette, np.float32))
        self.pal = pal
        self.k = pal.shape[0]
        self.sharpness = float(sharpness)
        self.bias = torch.as_tensor(np.asarray(bias, np.float32)) if len(bias) and not prescaled else None
        #: The factor from logit differences to base-2 exponents; None: already applied.
        self.scale = None if prescaled else self.sharpness * LOG2_E
        self.pal_t = pal.T.contiguous()  # (3, K)
        self.pal1_t = torch.cat([self.pal_t, torch.ones(1, self.k)], 0)  # (4, K): blend and its normaliser
        self._local = threading.local()
        self.keep = class_colours is not None
        self.bias_decides = bias_decides and self.keep
        table = [self.pal_t]
        if self.keep:
            cc = torch.as_tensor(np.asarray(class_colours, np.float32))
            self.cc = cc
            self.owner, normal, width, _, offset = class_faces(pal, cc)
            # Per palette colour k (class a), per class j: (c_j − c_a)·k and keep_class's slack of
            # k, none towards its own class (no face there).
            normal, offset, width = normal[self.owner], offset[self.owner], width[self.owner]  # (K, C, ...)
            start_proj = (normal * pal[:, None, :]).sum(-1)  # (K, C)
            slack = (offset - start_proj).clamp(min=0)
            own = torch.arange(self.k), self.owner
            slack[own] = 1e30  # "none": finite, so 0 · it is 0 in a product
            # A move of length d changes (c_j − c_a)·x by at most |c_j − c_a|·d: a blend that moved
            # less than slack / |c_j − c_a| from its palette colour crosses no face (t = 1).
            width[own] = 1.0
            reach = (slack / width).amin(1) * INSIDE_MARGIN
            table += [reach.pow(2)[None], torch.arange(self.k, dtype=torch.float32)[None]]  # and k itself
            #: (3 + 3 + 2C, K): per palette colour, what the clamp needs (gathered per pixel).
            self.clamp_table = torch.cat([self.pal_t, cc[self.owner].T, start_proj.T, slack.T], 0).contiguous()
        #: (rows + 1, K): a palette colour's colour (and its squared reach and index), one column
        #: each, and a row of ones, fetched per pixel in one matrix product (``_gather``).
        self.table1 = torch.cat([*table, torch.ones(1, self.k)], 0).contiguous()

    @classmethod
    def for_spec(cls, spec, prescaled: bool = False) -> PaletteDecoder:
        """The decoder of a palette-head :class:`~geopix.models.checkpoint.ModelSpec`."""
        from geopix.style import COLOURS

        return cls(
            spec.palette,
            spec.palette_sharpness,
            spec.palette_bias,
            COLOURS if spec.palette_keep_class else None,
            bias_decides=spec.palette_bias_decides,
            prescaled=prescaled,
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
                held[p] |= {"moved": torch.empty(3, p), "dist": torch.empty(p)}
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
        rows = self._gather(diff, b)  # the argmax colour (and its reach and index) of every pixel
        start = rows[:3]
        if self.sharpness <= 0:
            out.copy_(start)
            return
        if self.bias_decides:
            diff = torch.sub(x, torch.amax(x, 0, out=b["max"]), out=b["diff"])
        # exp(s·d) as 2^(s·log2(e)·d): torch's exp2 is 2.7× faster than its exp (same 1-ulp
        # accuracy).  Weights below e^-80 change no sum; stopping there keeps out of subnormals.
        if self.scale is not None:
            diff.mul_(self.scale)
        e = diff.clamp_(min=-80.0 * LOG2_E).exp2_()
        sums = torch.matmul(self.pal1_t, e, out=b["sums"])  # (4, P): Σ w·colour and Σ w
        target = torch.div(sums[:3], sums[3], out=out)
        if self.keep:
            self._keep_class(start, target, rows[3], rows[4], b, out)

    def _keep_class(
        self,
        start: torch.Tensor,
        target: torch.Tensor,
        reach2: torch.Tensor,
        index: torch.Tensor,
        b: dict,
        out: torch.Tensor,
    ) -> None:
        """``keep_class`` for the pixels whose blend moved beyond their colour's reach (``out``
        holds the blend; the others keep it, t = 1).  t = the smallest slack / toward over the
        faces the blend moves towards, at most 1; toward_j = (c_j − c_a)·(target − start)."""
        moved = torch.sub(target, start, out=b["moved"])
        dist = torch.sum(moved.mul_(moved), 0, out=b["dist"])
        far = (dist > reach2).nonzero()[:, 0]
        if not len(far):
            return
        cols = self.clamp_table.index_select(1, index.index_select(0, far).long())  # argmax's colour's
        c = self.cc.shape[0]
        s, own_colour, start_proj, slack = cols[:3], cols[3:6], cols[6 : 6 + c], cols[6 + c :]
        g = target.index_select(1, far)
        toward = self.cc @ g - (own_colour * g).sum(0) - start_proj
        bound = slack.div_(toward.clamp_(min=0.0))  # x/0 = inf: a face it does not move towards
        t = bound.nan_to_num_(nan=float("inf")).amin(0).clamp_(max=1.0)  # 0/0: on a face, moving along it
        out.index_copy_(1, far, torch.addcmul(s, t[None], g - s))


def prescale(spec) -> tuple[float, list[float]] | None:
    """``(scale, bias)`` such that ``(logits + bias) · scale`` is what a ``prescaled`` decoder of
    ``spec`` takes, or None where it cannot (an RGB head, or ``palette_bias_decides``).  The scale
    turns logit differences into base-2 exponents; 1 for argmax alone, which has none."""
    if spec.head != "palette" or (spec.palette_bias_decides and spec.palette_keep_class):
        return None
    k = len(spec.palette)
    bias = list(spec.palette_bias) if spec.palette_bias else [0.0] * k
    return (spec.palette_sharpness * LOG2_E if spec.palette_sharpness > 0 else 1.0), bias
