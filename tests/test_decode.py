"""The fast palette decoding draws the same map as ``palette_to_rgb`` for the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopix.models.decode import PaletteDecoder
from geopix.models.generator import palette_to_rgb
from geopix.style import COLOURS

#: The shipped sat2map palette (10 k-means colours, three of them anti-aliasing blends).
PALETTE = (
    (232, 229, 222), (202, 222, 172), (176, 207, 254), (242, 240, 234), (253, 253, 251),
    (247, 220, 140), (247, 158, 38), (222, 218, 210), (203, 205, 190), (227, 174, 75),
)  # fmt: skip
BIAS = (0.0, 0.25, 0.0, 0.0, 0.05, 0.0, 0.0, 0.05, 0.05, 0.05)


def logits(seed: int, n: int = 2, side: int = 64) -> torch.Tensor:
    """Logits like a trained head's: mostly one clear winner, many near-ties, some exact ties."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, (n, len(PALETTE), side, side)).astype(np.float32)
    x[:, 0] += rng.uniform(0, 4, (n, side, side)).astype(np.float32)
    x[:, 3, :8] = x[:, 0, :8]  # exact ties: argmax keeps the first
    return torch.from_numpy(x)


@pytest.mark.parametrize(
    ("sharpness", "bias", "keep", "decides"),
    [(8.0, BIAS, True, False), (8.0, BIAS, True, True), (8.0, (), True, False), (3.0, BIAS, False, False),
     (0.0, BIAS, False, False), (0.0, (), True, False)],
)  # fmt: skip
def test_same_map_as_palette_to_rgb(sharpness: float, bias: tuple, keep: bool, decides: bool) -> None:
    x = logits(int(sharpness) + len(bias) + keep + 2 * decides)
    cc = torch.as_tensor(COLOURS) if keep else None
    ref = palette_to_rgb(x, PALETTE, sharpness, bias, cc, bias_decides=decides)
    got = PaletteDecoder(PALETTE, sharpness, bias, COLOURS if keep else None, bias_decides=decides)(x)
    assert got.shape == ref.shape
    # Float rounding only (the blend's sums run in another order): far below an 8-bit step, so the
    # 8-bit maps differ by at most one unit, and only where a value sits on a rounding edge.
    assert (got - ref).abs().max() < 1e-2
    diff = (got.round().clamp(0, 255) - ref.round().clamp(0, 255)).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    if sharpness == 0:
        assert torch.equal(got, ref)  # argmax alone: the palette colours themselves


def test_any_memory_format_and_thread_buffers_give_the_same_colours() -> None:
    x = logits(7, n=3, side=128)
    dec = PaletteDecoder(PALETTE, 8.0, BIAS, COLOURS)
    a = dec(x)
    b = dec(x.contiguous(memory_format=torch.channels_last))
    c = dec(x[:1])  # another batch size reuses this thread's buffers
    assert torch.equal(a, b) and torch.equal(a[:1], c)


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match="logit channels"):
        PaletteDecoder(PALETTE, 8.0)(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize(("sharpness", "bias", "keep"), [(8.0, BIAS, True), (3.0, (), False), (0.0, BIAS, False)])
def test_prescaled_logits_give_the_same_map(sharpness: float, bias: tuple, keep: bool) -> None:
    """The int8 graph ends in ``prescale``'s step; the decoder then skips it and draws the same map."""
    from types import SimpleNamespace

    from geopix.models.decode import prescale

    spec = SimpleNamespace(
        head="palette", palette=PALETTE, palette_sharpness=sharpness, palette_bias=bias,
        palette_keep_class=keep, palette_bias_decides=False,
    )  # fmt: skip
    scale, b = prescale(spec)
    x = logits(11)
    plain = PaletteDecoder.for_spec(spec)(x)
    pre = PaletteDecoder.for_spec(spec, prescaled=True)((x + torch.tensor(b).view(1, -1, 1, 1)) * scale)
    assert (pre - plain).abs().max() < 1e-2
    diff = (pre.round() - plain.round()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    if sharpness == 0:
        assert scale == 1.0 and torch.equal(pre, plain)


def test_bias_decides_has_no_prescaled_form() -> None:
    from types import SimpleNamespace

    from geopix.models.decode import prescale

    spec = SimpleNamespace(
        head="palette", palette=PALETTE, palette_sharpness=8.0, palette_bias=BIAS,
        palette_keep_class=True, palette_bias_decides=True,
    )  # fmt: skip
    assert prescale(spec) is None
    assert prescale(SimpleNamespace(head="rgb")) is None
    with pytest.raises(ValueError, match="bias_decides"):
        PaletteDecoder.for_spec(spec, prescaled=True)


def _spec(sharpness: float, bias: tuple, keep: bool, decides: bool = False):
    from types import SimpleNamespace

    return SimpleNamespace(
        head="palette", palette=PALETTE, palette_sharpness=sharpness, palette_bias=bias,
        palette_keep_class=keep, palette_bias_decides=decides,
    )  # fmt: skip


def test_defaults_are_argmax_without_offsets_or_classes() -> None:
    """``PaletteDecoder(palette)``: argmax alone, as ``palette_to_rgb``'s defaults."""
    x = logits(21)
    assert torch.equal(PaletteDecoder(PALETTE)(x), palette_to_rgb(x, PALETTE))
    blend = PaletteDecoder(PALETTE, 8.0, BIAS, COLOURS)(x)  # bias_decides defaults to off
    ref = palette_to_rgb(x, PALETTE, 8.0, BIAS, torch.as_tensor(COLOURS))
    assert (blend - ref).abs().max() < 1e-2


@pytest.mark.parametrize(("sharpness", "keep"), [(8.0, False), (0.5, True), (0.5, False)])
def test_for_spec_decodes_as_the_spec_says(sharpness: float, keep: bool) -> None:
    """``for_spec`` honours keep_class and a sharpness below 1 (also prescaled: the scale is
    s · log2 e for every s > 0, not only s > 1)."""
    from geopix.models.decode import prescale

    spec = _spec(sharpness, BIAS, keep)
    x = logits(23)
    ref = palette_to_rgb(x, PALETTE, sharpness, BIAS, torch.as_tensor(COLOURS) if keep else None)
    scale, b = prescale(spec)
    pre = (x + torch.tensor(b).view(1, -1, 1, 1)) * scale
    for got in (PaletteDecoder.for_spec(spec)(x), PaletteDecoder.for_spec(spec, prescaled=True)(pre)):
        assert (got - ref).abs().max() < 1e-2


@pytest.mark.parametrize("decides", [False, True])
def test_large_per_pixel_offsets_change_nothing(decides: bool) -> None:
    """Logits are only compared within a pixel: adding ±300 to all of a pixel's logits keeps its
    colour (a global instead of a per-pixel maximum would push other pixels' weights to 0)."""
    x = logits(25, n=1, side=32)
    offset = torch.linspace(-300, 300, 32 * 32).view(1, 1, 32, 32)
    dec = PaletteDecoder(PALETTE, 8.0, BIAS, COLOURS, bias_decides=decides)
    ref = palette_to_rgb(x, PALETTE, 8.0, BIAS, torch.as_tensor(COLOURS), bias_decides=decides)
    assert (dec(x + offset) - ref).abs().max() < 5e-2  # float32 rounding of logits near ±300


def test_scratch_buffers_are_kept_per_thread_and_never_resized() -> None:
    """A call allocates no planes (they are kept per thread and size) and none is the wrong shape:
    torch would silently resize an ``out=`` buffer, with a warning, on every call."""
    import warnings

    from geopix.models.decode import CHUNK

    dec = PaletteDecoder(PALETTE, 8.0, BIAS, COLOURS)
    x = logits(27, n=1, side=256)  # 65536 px: full runs of CHUNK
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = dec(x)
        planes = dec._buffers(CHUNK)
        assert dec(x).equal(first) and dec._buffers(CHUNK) is planes


def test_the_gpu_path_decodes_the_same_map() -> None:
    """``Predictor._decode_on_device`` (the GPU path: ``palette_to_rgb`` with the decoder's
    palette and options) draws what the CPU decoder draws; run here on CPU tensors."""
    from geopix.infer import Predictor

    spec = _spec(8.0, BIAS, True)
    pred = Predictor.__new__(Predictor)
    pred.spec, pred.decoder = spec, PaletteDecoder.for_spec(spec)
    x = logits(29)
    assert (pred._decode_on_device(x) - pred.decoder(x)).abs().max() < 1e-2
