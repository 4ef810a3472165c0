"""``geopix export --format onnx``: a self-describing file that ONNX Runtime alone runs to geopix's map."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geopix.cli import main
from geopix.infer import Predictor
from geopix.models.checkpoint import load_checkpoint, save_checkpoint
from geopix.testing import random_checkpoint, synthetic_aerial

onnx = pytest.importorskip("onnx", reason="geopix[onnx] is not installed")
ort = pytest.importorskip("onnxruntime", reason="geopix[onnx] is not installed")

STYLE_PALETTE = ((232, 229, 222), (202, 222, 172), (176, 207, 254), (242, 240, 234), (253, 253, 251),
                 (247, 220, 140), (247, 158, 38), (222, 218, 210))  # fmt: skip


@pytest.fixture(scope="module")
def palette_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random palette-head checkpoint decoded like sat2map: softmax blend, class offsets, keep_class."""
    folder = tmp_path_factory.mktemp("onnx")
    model = load_checkpoint(random_checkpoint(folder / "r.safetensors", ngf=4, head="palette"))
    torch.manual_seed(3)
    net = dataclasses.replace(model.spec, palette=STYLE_PALETTE, output_nc=len(STYLE_PALETTE)).build()
    net.load_state_dict(
        {k: (torch.randn_like(v) * 0.2 if k.endswith("weight") else v) for k, v in net.state_dict().items()}
    )
    spec = dataclasses.replace(
        model.spec,
        palette=STYLE_PALETTE,
        output_nc=len(STYLE_PALETTE),
        palette_sharpness=8.0,
        palette_bias=(0.0, 0.25, 0.0, 0.0, 0.05, 0.0, 0.0, 0.05),
        palette_keep_class=True,
    )
    return save_checkpoint(net.eval(), spec, folder / "palette.safetensors")


def aerial_tiles(tmp: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(synthetic_aerial(tmp / "a.tif", 512, seed=5)) as src:
        a = src.read().astype(np.float32)
    return np.stack([a[:, :256, :256], a[:, 256:, 256:]])


def test_exported_file_run_by_onnxruntime_alone_draws_geopix_map(palette_model: Path, tmp_path: Path) -> None:
    dst = tmp_path / "model.onnx"
    assert main(["export", str(palette_model), str(dst), "--format", "onnx"]) == 0
    rgb = aerial_tiles(tmp_path)
    # What a user without geopix runs (docs/cli.md): ONNX Runtime on 0..255 RGB.
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    theirs = session.run(["map"], {"image": rgb})[0]
    model = load_checkpoint(palette_model)
    ours = Predictor(model.spec, model.net, "cpu", precision="fp32").predict(rgb / 127.5 - 1.0)
    assert theirs.shape == ours.shape == (2, 3, 256, 256)
    diff = np.abs(np.clip(np.rint(theirs), 0, 255) - np.clip(np.rint(ours), 0, 255))
    # BatchNorm folded into the convolutions moves logits by float rounding: the same 8-bit map
    # but for a rare pixel on a rounding edge or an argmax near-tie.
    assert (diff > 1).mean() < 1e-3 and np.median(diff) == 0


def test_exported_file_describes_itself(palette_model: Path, tmp_path: Path) -> None:
    dst = tmp_path / "model.onnx"
    assert main(["export", str(palette_model), str(dst), "--format", "onnx", "--tile-size", "512"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    spec = load_checkpoint(palette_model).spec
    assert meta["tile_size"] == "512" and float(meta["ground_resolution_m"]) == spec.ground_resolution_m
    assert [tuple(c) for c in json.loads(meta["palette"])] == list(STYLE_PALETTE)
    decoding = json.loads(meta["decoding"])
    assert decoding["palette_sharpness"] == 8.0 and decoding["palette_keep_class"] is True
    assert "x/127.5-1" in meta["normalisation"]


def test_tanh_model_exports_too(tmp_path: Path) -> None:
    src = random_checkpoint(tmp_path / "t.safetensors", ngf=4)
    dst = tmp_path / "t.onnx"
    assert main(["export", str(src), str(dst), "--format", "onnx"]) == 0
    rgb = aerial_tiles(tmp_path)[:1]
    theirs = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(["map"], {"image": rgb})[0]
    model = load_checkpoint(src)
    ours = Predictor(model.spec, model.net, "cpu", precision="fp32").predict(rgb / 127.5 - 1.0)
    assert np.abs(theirs - ours).max() < 0.05


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    src = random_checkpoint(tmp_path / "t.safetensors", ngf=4)
    assert main(["export", str(src), str(tmp_path / "x"), "--format", "tflite"]) != 0
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("cin", "cout", "bias", "size"), [(3, 5, True, (6, 6)), (8, 2, False, (5, 9)), (1, 1, True, (1, 1))]
)
def test_a_transposed_convolution_as_four_phase_convolutions_gives_the_same_sums(
    cin: int, cout: int, bias: bool, size: tuple[int, int]
) -> None:
    from geopix.models.onnx_export import PhaseTransposed

    torch.manual_seed(cin * 10 + cout)
    conv = torch.nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=bias).eval()
    x = torch.randn(2, cin, *size)
    with torch.inference_mode():
        want, got = conv(x), PhaseTransposed(conv)(x)
    assert got.shape == want.shape == (2, cout, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_only_stride_two_four_by_four_transposed_convolutions_are_rewritten(tmp_path: Path) -> None:
    from geopix.models.onnx_export import PhaseTransposed, fold_batchnorm, phase_transposed

    other = torch.nn.ConvTranspose2d(4, 4, kernel_size=3, stride=1, padding=1)
    net = phase_transposed(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 4, 4, 2, 1), other))
    assert isinstance(net[0], PhaseTransposed) and net[1] is other
    unet = fold_batchnorm(load_checkpoint(random_checkpoint(tmp_path / "u.safetensors", ngf=4)).net)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        want = unet(x)
        rewritten = phase_transposed(unet)
        got = rewritten(x)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in rewritten.modules())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
