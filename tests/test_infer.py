"""Inference: device and precision resolution, and what bf16 does to the colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geopix.cluster import cluster_precision
from geopix.config import InferConfig
from geopix.errors import DeviceError, GeopixError
from geopix.infer import Predictor, native_bf16, resolve_device, resolve_precision
from geopix.models.checkpoint import load_checkpoint
from geopix.testing import random_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return load_checkpoint(random_checkpoint(tmp_path_factory.mktemp("m") / "m.safetensors", ngf=8))


def test_precision_is_validated() -> None:
    with pytest.raises(GeopixError, match="--precision 'int4'"):
        InferConfig(precision="int4")


def test_auto_precision_follows_the_hardware() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")


class _FakeClient:
    """Answers ``client.run`` as workers with the given bf16 support would."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    def run(self, fn, *args):
        return {f"tcp://w{i}": a for i, a in enumerate(self.answers)}


def test_one_fp32_only_worker_makes_the_whole_render_fp32() -> None:
    auto = InferConfig(precision="auto")
    assert cluster_precision(auto, _FakeClient(["bf16", "bf16"])) == "bf16"
    assert cluster_precision(auto, _FakeClient(["bf16", "fp32"])) == "fp32"
    assert cluster_precision(InferConfig(precision="fp32"), _FakeClient(["bf16"])) == "fp32"  # explicit wins


@pytest.mark.parametrize(("workers", "warned"), [(["bf16", "bf16"], False), (["bf16", "fp32"], True)])
def test_bf16_forced_where_a_worker_emulates_it_is_warned_of(caplog, workers: list[str], warned: bool) -> None:
    with caplog.at_level("WARNING", logger="geopix"):
        assert cluster_precision(InferConfig(precision="bf16"), _FakeClient(workers)) == "bf16"
    assert ("emulates it" in caplog.text) == warned


def test_bf16_output_stays_close_to_fp32(model) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    ref = Predictor(model.spec, model.net, "cpu", precision="fp32").predict(x)
    out = Predictor(model.spec, model.net, "cpu", precision="bf16").predict(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(out - ref)
    assert 0 < diff.mean() < 2.0  # it really ran in bf16, and the colours barely move
    again = Predictor(model.spec, model.net, "cpu", precision="bf16").predict(x)
    np.testing.assert_array_equal(out, again)  # deterministic


def test_explicit_cuda_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="--device cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_predictions_match_cpu(model, tmp_path: Path) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    cpu = Predictor(model.spec, model.net, "cpu", precision="fp32").predict(x)
    gpu = Predictor(model.spec, model.net, "cuda", precision="fp32").predict(x)
    assert np.abs(cpu - gpu).max() < 1.0


@pytest.mark.parametrize(("openvino", "hinted"), [(False, True), (True, False)])
def test_auto_without_openvino_on_an_int8_cpu_names_the_extra(
    model, monkeypatch, caplog, openvino: bool, hinted: bool
) -> None:
    import geopix.runtime as runtime

    monkeypatch.setattr(runtime, "int8_isa", lambda: "avx2")
    monkeypatch.setattr(runtime, "has_openvino", lambda: openvino)
    monkeypatch.setattr(runtime, "native_int8", lambda: True)
    import geopix.cluster as cluster

    monkeypatch.setattr(cluster, "_int8_gate", lambda *args, **kwargs: False)  # no model is built here
    with caplog.at_level("INFO", logger="geopix"):
        cluster_precision(InferConfig(precision="auto", device="cpu"), None, str(model.path))
    assert ("geopix[int8]" in caplog.text) == hinted
