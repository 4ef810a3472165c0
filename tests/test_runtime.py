"""geopix.runtime: exact int8 arithmetic on any CPU, as VNNI and AMX compute it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopix import runtime
from geopix.errors import OptionError


def _fake_quantize(v: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    step = (hi - lo) / (levels - 1)
    return np.round((np.clip(v, lo, hi) - lo) / step) * step + lo


def test_exact_int8_computes_a_quantized_convolution_as_integer_sums_would(tmp_path) -> None:
    """Full-range u8 activations times full-range s8 weights: pairs of products overflow 16 bits, so
    AVX2's kernels saturate (2.3 off here on a Zen 3); VNNI and AMX sum in 32 bits, exactly.  Under
    ``exact_int8`` OpenVINO must give the float64 result of the same fake-quantized inputs."""
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 16, 12, 12)).astype(np.float32)
    w = rng.uniform(-1, 1, (8, 16, 3, 3)).astype(np.float32)

    def fq(node, levels: int):
        one = ops.constant(np.array(1.0, np.float32))
        minus = ops.constant(np.array(-1.0, np.float32))
        return ops.fake_quantize(node, minus, one, minus, one, levels)

    inp = ops.parameter(ov.PartialShape([-1, 16, -1, -1]), np.float32)
    conv = ops.convolution(fq(inp, 256), fq(ops.constant(w), 255), [1, 1], [1, 1], [1, 1], [1, 1])
    xml = tmp_path / "conv.xml"
    ov.save_model(ov.Model([conv], [inp]), str(xml))
    want = torch.nn.functional.conv2d(
        torch.from_numpy(_fake_quantize(x.astype(np.float64), -1, 1, 256)),
        torch.from_numpy(_fake_quantize(w.astype(np.float64), -1, 1, 255)),
        padding=1,
    ).numpy()
    with runtime.exact_int8("vnni"):
        assert runtime.int8_isa() == "vnni"
        got = runtime.OpenVinoNetwork(xml, threads=1)(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert runtime._EXACT_AS is None  # left on the way out


def test_exact_int8_is_refused_for_classes_only_their_cpus_compute() -> None:
    before = runtime.int8_isa()
    for isa in ("avx2", "dotprod", "sse"):
        refused = pytest.raises(OptionError, match=f"int8 class '{isa}' cannot be computed exactly")
        with refused, runtime.exact_int8(isa):
            pass
    with pytest.raises(RuntimeError), runtime.exact_int8("amx"):
        assert runtime.int8_isa() == "amx"
        raise RuntimeError("a failure inside leaves the CPU's own class behind")
    assert runtime.int8_isa() == before
