"""The pix2pix U-Net generator and the 70x70 PatchGAN discriminator.

The module tree mirrors the authors' ``networks.py`` exactly (``model.model.0`` … nested
``UnetSkipConnectionBlock``s), so their published ``.pth`` state dicts load without renaming.
Two additions of ours are opt-in and change no official key:

* ``head="palette"``: the outermost up-convolution emits one logit per palette colour
  instead of 3 tanh channels.  Maps are drawn in a handful of flat colours, so predicting
  *which* colour beats regressing RGB (which blurs towards muddy averages).
* ``norm="none"`` for tests and tiny models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import get_args

import torch
from torch import nn

from geopix.config import Head, Norm

NORMS: tuple[str, ...] = get_args(Norm)
HEADS: tuple[str, ...] = get_args(Head)


def norm_layer(kind: str) -> type[nn.Module] | functools.partial | None:
    """Return the norm constructor the authors use for ``kind`` (``None`` for no norm)."""
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "none":
        return None
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down-conv → submodule → up-conv, with the input concatenated back."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
        outer_activation: bool = True,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        make_norm = norm_layer(norm)
        # The authors only give convolutions a bias when the norm cannot absorb it.
        use_bias = norm != "batch"
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)

        def maybe_norm(ch: int) -> list[nn.Module]:
            return [make_norm(ch)] if make_norm is not None else [nn.Identity()]

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            down: list[nn.Module] = [downconv]
            up: list[nn.Module] = [uprelu, upconv]
            if outer_activation:
                up.append(nn.Tanh())
            model = [*down, submodule, *up]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [downrelu, downconv]
            up = [uprelu, upconv, *maybe_norm(outer_nc)]
            model = down + up
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [downrelu, downconv, *maybe_norm(inner_nc)]
            up = [uprelu, upconv, *maybe_norm(outer_nc)]
            if use_dropout:
                up.append(nn.Dropout(0.5))
            model = [*down, submodule, *up]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix ``unet_<2**num_downs>``: input sides must be multiples of ``2**num_downs``."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
        head: str = "tanh",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        self.num_downs = num_downs
        self.head = head
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc,
            ngf,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
            norm=norm,
            outer_activation=head == "tanh",
        )

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """The authors' PatchGAN; ``n_layers=3`` gives the 70x70 receptive field."""

    def __init__(self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        use_bias = norm != "batch"
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            seq.append(nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=use_bias))
            seq.append(make_norm(ndf * mult) if make_norm is not None else nn.Identity())
            seq.append(nn.LeakyReLU(0.2, True))
        seq.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The authors' ``normal`` init: N(0, gain) for convs, N(1, gain) for norm scales."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def palette_to_rgb(
    logits: torch.Tensor,
    palette: Sequence[Sequence[float]] | torch.Tensor,
    sharpness: float = 0.0,
    bias: Sequence[float] = (),
    class_colours: torch.Tensor | None = None,
    *,
    bias_decides: bool = False,
) -> torch.Tensor:
    """Palette logits (N,K,H,W) → RGB (N,3,H,W) in 0..255; a pure per-pixel function.

    ``sharpness`` 0: each pixel's most likely colour (``argmax``: flat colours stay exact).
    ``sharpness`` s > 0: the colours averaged with weights ``softmax(s · logits)`` — confident
    pixels keep their flat colour, uncertain ones move towards the expected colour, which
    costs a little exact-colour accuracy and saves squared error.
    ``bias`` (one value per colour) is added to the logits first: a prior shift.
    ``class_colours`` (C,3): the style's class colours.  A blend then stops short of the
    colours of another class (:func:`keep_class`), so every pixel still reads as the class of
    its most likely colour: half road, half background would otherwise be the building colour.
    ``bias_decides`` (with ``class_colours``): the offsets choose the class only; the blend uses
    the unshifted logits, so a pixel the offset moved into a class is drawn just inside that
    class's colours, not in its full colour — the class changes, the drawn confidence does not.
    """
    pal = torch.as_tensor(palette, dtype=torch.float32, device=logits.device)
    shifted = logits
    if len(bias):
        shifted = logits.float() + torch.as_tensor(bias, dtype=torch.float32, device=logits.device)[None, :, None, None]
    idx = shifted.argmax(1)  # N,H,W
    if sharpness <= 0:
        return pal[idx].permute(0, 3, 1, 2)
    blend = logits if bias_decides and class_colours is not None else shifted
    weights = torch.softmax(sharpness * blend.float(), 1)
    expected = torch.einsum("nkhw,kc->nchw", weights, pal)
    if class_colours is None:
        return expected
    return keep_class(pal[idx], expected.permute(0, 2, 3, 1), pal, idx, class_colours).permute(0, 3, 1, 2)


def class_faces(palette: torch.Tensor, cc: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The nearest-colour cells :func:`keep_class` keeps a blend inside, for palette colours
    ``palette`` (K, 3) and class colours ``cc`` (C, 3): each palette colour's class ``owner``
    (K,); per pair of classes (a, j) the face normal ``c_j − c_a`` (C, C, 3), its length
    ``width`` (C, C: one RGB unit in half-space units) and the half-space offset
    ``(|c_j|² − |c_a|²) / 2 − |c_j − c_a|`` (C, C: one unit inside the bisector); and ``|c|²`` (C,)."""
    owner = torch.cdist(palette, cc).argmin(1)
    normal = cc[None, :, :] - cc[:, None, :]
    width = normal.norm(dim=-1)
    sq = cc.pow(2).sum(1)
    offset = (sq[None, :] - sq[:, None]) / 2 - width
    return owner, normal, width, sq, offset


def keep_class(
    start: torch.Tensor, target: torch.Tensor, palette: torch.Tensor, idx: torch.Tensor, class_colours: torch.Tensor
) -> torch.Tensor:
    """Move each pixel from ``start`` (its argmax colour, ...,3) towards ``target`` only as far
    as it stays nearest to its own class colour, by at least one RGB unit (so rounding to
    8 bits keeps it there).  The nearest-colour cells are convex, so the largest step is the
    smallest crossing of the half-spaces ``x · (c_j − c_a) ≤ (|c_j|² − |c_a|²) / 2``.

    Most targets are well inside their cell (``|x − c_j|² − |x − c_a|² ≥ 2 |c_j − c_a|`` for
    every other class j, seven distances a pixel); only the others get the half-space clamp,
    which keeps the decoding's cost small.  Every palette colour is inside its cell with that
    margin, so a target inside needs no clamp: ``t`` = 1 either way.
    """
    cc = torch.as_tensor(class_colours, dtype=torch.float32, device=start.device)
    owner, normal, width, sq, offset = class_faces(palette, cc)
    cls = owner[idx]  # N,H,W
    dist = (target.pow(2).sum(-1, keepdim=True) - 2 * target @ cc.T + sq).clamp(min=0)  # N,H,W,C
    gap = dist - dist.gather(-1, cls[..., None]) - 2 * width[cls]
    gap.scatter_(-1, cls[..., None], float("inf"))  # the own class is no constraint
    crossing = (gap < 0).any(-1)  # N,H,W: the pixels that need the clamp
    t = torch.ones(cls.shape, dtype=torch.float32, device=start.device)
    if crossing.any():
        s, g, c = start[crossing], target[crossing], cls[crossing]  # (M,3), (M,3), (M,)
        n, b = normal[c], offset[c]  # (M,C,3), (M,C)
        slack = (b - (n * s[:, None, :]).sum(-1)).clamp(min=0)
        toward = (n * (g - s)[:, None, :]).sum(-1)
        bound = torch.where(toward > 0, slack / toward.clamp(min=1e-12), torch.full_like(slack, float("inf")))
        t[crossing] = bound.min(-1).values.clamp(max=1.0)
    return start + t[..., None] * (target - start)
