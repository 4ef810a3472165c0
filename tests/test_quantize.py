"""--precision int8: the quantized model agrees with fp32, is built once, and refuses clearly."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geopix.cluster import cluster_precision
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.errors import DeviceError, OptionError
from geopix.infer import Predictor, int8_capable
from geopix.models import quantize
from geopix.models.checkpoint import load_checkpoint, save_checkpoint
from geopix.pipeline import render
from geopix.runtime import EXACT_INT8_ISAS, check_int8
from geopix.style import classify
from geopix.testing import random_checkpoint, synthetic_aerial

needs_int8 = pytest.mark.skipif(
    not int8_capable("cpu"), reason="needs geopix[int8] (openvino, nncf) and a CPU with AVX2/VNNI/AMX/dotprod"
)
STYLE_PALETTE = ((232, 229, 222), (202, 222, 172), (176, 207, 254), (242, 240, 234), (253, 253, 251),
                 (247, 220, 140), (247, 158, 38))  # fmt: skip


@pytest.fixture(scope="module")
def palette_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random palette-head checkpoint decoded like sat2map (softmax blend, offsets, keep_class)."""
    folder = tmp_path_factory.mktemp("q")
    model = load_checkpoint(random_checkpoint(folder / "r.safetensors", ngf=4, head="palette", seed=2))
    spec = dataclasses.replace(
        model.spec, palette=STYLE_PALETTE, output_nc=len(STYLE_PALETTE), palette_sharpness=8.0,
        palette_bias=(0.0, 0.25, 0.0, 0.0, 0.05, 0.0, 0.0), palette_keep_class=True,
    )  # fmt: skip
    torch.manual_seed(2)
    net = spec.build()
    from geopix.models.generator import init_weights

    init_weights(net)
    return save_checkpoint(net.eval(), spec, folder / "palette.safetensors")


def tiles(seed: int = 5, n: int = 4) -> np.ndarray:
    from geopix.testing import _scene

    return np.stack([_scene((256, 256), seed + i)[0].transpose(2, 0, 1) for i in range(n)]) / 127.5 - 1.0


@needs_int8
def test_int8_agrees_with_fp32_on_fixture_tiles(palette_model: Path) -> None:
    model = load_checkpoint(palette_model)
    x = tiles().astype(np.float32)
    fp32 = Predictor(model.spec, model.net, "cpu", precision="fp32").predict(x)
    q = Predictor.from_loaded(model, "cpu", precision="int8")
    int8 = q.predict(x)
    assert q.precision == "int8" and q.int8 is not None and q.int8.passes
    agree = (classify(fp32.transpose(0, 2, 3, 1)) == classify(int8.transpose(0, 2, 3, 1))).mean()
    assert agree >= 0.99
    assert np.abs(int8 - fp32).max() > 0  # it really ran the quantized network
    np.testing.assert_array_equal(int8, q.predict(x))  # deterministic


@needs_int8
def test_int8_with_a_stream_per_task_thread_draws_the_same_map(palette_model: Path) -> None:
    """Two task threads of a worker call one model at once (a stream each): each gets exactly
    what one thread alone gets, so the map does not depend on how many threads a worker has."""
    from concurrent.futures import ThreadPoolExecutor

    model = load_checkpoint(palette_model)
    x = tiles(n=8).astype(np.float32)
    alone = Predictor.from_loaded(model, "cpu", precision="int8").predict(x)
    shared = Predictor.from_loaded(model, "cpu", precision="int8", callers=2)
    assert shared.int8.prescaled and shared.runner.compiled.get_property("NUM_STREAMS") == 2
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(shared.predict, [x[:4], x[4:], x[:4], x[4:]]))
    np.testing.assert_array_equal(np.concatenate(got[:2]), alone)
    np.testing.assert_array_equal(np.concatenate(got[2:]), alone)


@needs_int8
def test_int8_model_is_built_once_and_a_corrupt_cache_is_rebuilt(palette_model: Path, monkeypatch) -> None:
    model = load_checkpoint(palette_model)
    first = quantize.int8_model(palette_model, model.spec, model.net)
    built = first.path.stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    with monkeypatch.context() as m:
        m.setattr(quantize, "build_int8", no_rebuild)
        again = quantize.int8_model(palette_model, model.spec, model.net)
    assert again == first and again.path.stat().st_mtime_ns == built
    first.path.write_text("<not a model")  # a torn or corrupt file
    rebuilt = quantize.int8_model(palette_model, model.spec, model.net)
    assert rebuilt.path == first.path and rebuilt.agreement == pytest.approx(first.agreement)
    weights = first.path.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated weights
    assert quantize.int8_model(palette_model, model.spec, model.net).path.with_suffix(".bin").stat().st_size > 1000
    assert not list(first.path.parent.glob(".*"))  # no temporary left behind


@needs_int8
def test_threads_asking_for_one_int8_model_build_it_once(tmp_path: Path, monkeypatch) -> None:
    """Renders on threads (workflows/render_many) ask for one checkpoint's int8 model at once: torch's
    ONNX exporter refuses a second export in another thread, so the second caller must wait for
    the first's build and load it (CI failed here once); another checkpoint's build waits too."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("GEOPIX_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached yet
    ckpt = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    model = load_checkpoint(ckpt)
    other = random_checkpoint(tmp_path / "other.safetensors", ngf=4, seed=9)
    other_model = load_checkpoint(other)
    builds = []
    real_build = quantize.build_int8

    def counted(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(quantize, "build_int8", counted)

    def build(which: int) -> quantize.Int8Model:
        if which == 3:  # another checkpoint at the same time: NNCF cannot run twice at once either
            return quantize.int8_model(other, other_model.spec, other_model.net)
        return quantize.int8_model(ckpt, model.spec, model.net)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(build, range(4)))
    assert len(builds) == 2
    assert got[0] == got[1] == got[2] != got[3]


@needs_int8
def test_auto_picks_int8_only_when_the_gate_passes(palette_model: Path, monkeypatch) -> None:
    auto = InferConfig(device="cpu", precision="auto")
    assert cluster_precision(auto, None, str(palette_model)) == "int8"
    assert Predictor.from_loaded(load_checkpoint(palette_model), "cpu", precision="auto").precision == "int8"
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # no model passes
    assert cluster_precision(auto, None, str(palette_model)) in ("bf16", "fp32")
    assert Predictor.from_loaded(load_checkpoint(palette_model), "cpu", precision="auto").precision != "int8"


def _no_build(*args, **kwargs):
    raise AssertionError("built although one is shipped")


def _shipped_classes() -> set[str]:
    """The CPU int8 classes geopix ships a sat2map int8 model for."""
    return {i for p in quantize.SHIPPED_DIR.glob("sat2map.*.json") for i in json.loads(p.read_text())["int8_isas"]}


class _Cluster:
    """A client whose workers answer ``run`` as given: their int8 classes (their CPUs, not this process's)."""

    def __init__(self, *classes: str | None) -> None:
        self.classes = classes

    def run(self, fn, *args):
        from geopix.cluster import _worker_int8

        if fn is _worker_int8:
            return {f"tcp://w{i}": c for i, c in enumerate(self.classes)}
        return {"tcp://w0": "fp32"}


@needs_int8
def test_a_cluster_gets_int8_only_with_one_int8_class_whose_gate_this_process_measures(
    palette_model: Path,
) -> None:
    from geopix.runtime import int8_isa

    auto, model = InferConfig(precision="auto", device="cpu"), str(palette_model)
    mine = int8_isa()
    other = "amx" if mine == "vnni" else "vnni"
    assert cluster_precision(auto, _Cluster(mine, mine), model) == "int8"  # the gate measured here is theirs
    assert cluster_precision(auto, _Cluster(mine, None), model) == "fp32"  # one worker cannot run it
    assert cluster_precision(auto, _Cluster(mine, other), model) == "fp32"  # two models would draw two maps
    assert cluster_precision(auto, _Cluster(other), model) == "fp32"  # no gate for their class here, none shipped


def test_a_cluster_of_another_int8_class_gets_int8_from_a_shipped_model_checked_on_it(monkeypatch) -> None:
    """A laptop (VNNI, say) driving AVX2 workers cannot measure their gate; geopix's shipped sat2map
    model for AVX2 was measured on AVX2, so it vouches for them (and the VNNI/AMX one, checked with
    exact int8 sums, for AMX workers); for Arm workers nothing does."""
    pytest.importorskip("openvino")
    import geopix.runtime as runtime
    from geopix.models.registry import load_model

    monkeypatch.setattr(runtime, "int8_isa", lambda: "vnni")  # this process
    auto, model = InferConfig(precision="auto", device="cpu"), str(load_model("sat2map").path)
    shipped = _shipped_classes()
    assert {"avx2", "amx"} <= shipped and "dotprod" not in shipped
    assert cluster_precision(auto, _Cluster("avx2", "avx2"), model) == "int8"
    assert cluster_precision(auto, _Cluster("amx"), model) == "int8"
    assert cluster_precision(auto, _Cluster("dotprod"), model) == "fp32"


@needs_int8
def test_int8_renders_do_not_change_a_byte_with_chunking(palette_model: Path, tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "in.tif", (600, 700), res=2.0)
    maps = []
    for name, chunk, scheduler in (("a", 512, "sync"), ("b", 2048, None), ("c", 512, None)):
        render(RenderConfig(input=src, output_dir=tmp_path / name, model=str(palette_model),
                            tiles=TileConfig(256, 64, chunk), infer=InferConfig(precision="int8"),
                            scheduler=scheduler))  # fmt: skip
        maps.append((tmp_path / name / "map.tif").read_bytes())
    assert maps[0] == maps[1] == maps[2]
    with rasterio.open(tmp_path / "a" / "map.tif") as ds:
        assert ds.read().std() > 0


@needs_int8
def test_int8_calls_carry_at_most_two_tiles_so_a_block_pads_at_most_one(
    palette_model: Path, tmp_path: Path, monkeypatch
) -> None:
    """Calls have one fixed shape, so each block's last call is padded with zero tiles: at
    --batch-size 8 that was 16 % of the network's time on sat2map; int8 calls take 2 tiles."""
    from geopix import runtime

    model = load_checkpoint(palette_model)
    quantize.int8_model(palette_model, model.spec, model.net)  # built (and its gate run) before counting
    calls: list[int] = []
    run = runtime.OpenVinoNetwork.__call__

    def counted(self, tiles):
        if tiles.shape[-1] == 256:  # not the warm-up
            calls.append(tiles.shape[0])
        return run(self, tiles)

    monkeypatch.setattr(runtime.OpenVinoNetwork, "__call__", counted)
    src = synthetic_aerial(tmp_path / "in.tif", (700, 900), res=2.0)
    maps = []
    for batch in (8, 1):
        calls.clear()
        res = render(RenderConfig(input=src, output_dir=tmp_path / str(batch), model=str(palette_model),
                                  tiles=TileConfig(256, 32, 512), scheduler="sync",
                                  infer=InferConfig(precision="int8", batch_size=batch)))  # fmt: skip
        assert res.tiles_run > res.blocks > 1
        assert set(calls) == {min(batch, 2)}
        assert sum(calls) - res.tiles_run < res.blocks  # under one padded tile per block
        maps.append((tmp_path / str(batch) / "map.tif").read_bytes())
    assert maps[0] == maps[1]


_CACHED_LOOKUP = """
import sys
from geopix.models.checkpoint import load_checkpoint
from geopix.models.quantize import int8_model
model = load_checkpoint(sys.argv[1])
assert int8_model(sys.argv[1], model.spec, model.net).passes
print("nncf" in sys.modules)
"""


@needs_int8
def test_a_cached_int8_model_is_found_without_importing_nncf(palette_model: Path) -> None:
    """Only building needs NNCF; importing it for the cache key's version took 0.42 s of every
    int8 render's start.  The key is unchanged: the same version string."""
    import subprocess

    import nncf

    model = load_checkpoint(palette_model)
    built = quantize.int8_model(palette_model, model.spec, model.net)
    assert quantize.nncf_version() == nncf.__version__
    done = subprocess.run([sys.executable, "-c", _CACHED_LOOKUP, str(palette_model)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert quantize.int8_model(palette_model, model.spec, model.net) == built


def test_int8_without_openvino_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(OptionError, match=r"geopix\[int8\]"):
        check_int8(torch.device("cpu"))


def test_int8_on_a_cpu_without_int8_instructions_is_a_clear_error(monkeypatch) -> None:
    import geopix.runtime as runtime

    pytest.importorskip("openvino")
    monkeypatch.setattr(runtime, "_machine", lambda: "x86_64")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"sse4_2", "avx"})
    with pytest.raises(DeviceError, match="--precision fp32"):
        check_int8(torch.device("cpu"))
    assert not int8_capable("cpu")  # and auto does not pick it there


@pytest.mark.parametrize(
    ("machine", "flags", "isa"),
    [
        ("x86_64", {"avx2"}, "avx2"),
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "vnni"),
        ("x86_64", {"avx2", "avx_vnni"}, "vnni"),
        ("x86_64", {"avx2", "avx512_vnni", "amx_int8"}, "amx"),
        ("x86_64", {"sse4_2"}, None),
        ("aarch64", {"asimd", "asimddp"}, "dotprod"),
        ("aarch64", {"asimd"}, None),
    ],
)
def test_the_int8_instruction_class_is_the_best_the_cpu_has(monkeypatch, machine: str, flags: set, isa: str) -> None:
    import geopix.runtime as runtime

    monkeypatch.setattr(runtime, "_machine", lambda: machine)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.int8_isa() == isa and runtime.native_int8() == (isa is not None)


def test_each_int8_instruction_class_gets_its_own_checked_model(monkeypatch, palette_model: Path) -> None:
    """VNNI and AVX2 round differently (sat2map: 99.16 vs 98.87 % agreement with one model), so a
    cache shared by unlike nodes must not hand one's gate to the other."""
    pytest.importorskip("openvino")
    keys = set()
    for isa in ("avx2", "vnni", "avx2"):
        monkeypatch.setattr(quantize, "int8_isa", lambda isa=isa: isa)
        keys.add(quantize.cache_key(palette_model, "fallback"))
    assert len(keys) == 2


def test_int8_on_a_gpu_device_is_refused() -> None:
    with pytest.raises(DeviceError, match="CPU only"):
        check_int8(torch.device("cuda"))


def test_calibration_without_shared_data_is_deterministic(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEOPIX_CALIBRATION_DATA", str(tmp_path / "absent"))
    spec = load_checkpoint(random_checkpoint(tmp_path / "m.safetensors", ngf=4)).spec
    _, source = quantize.calibration_source(spec)
    assert source.startswith("fallback")
    a_cal, a_check = quantize.calibration_tiles(spec)
    b_cal, b_check = quantize.calibration_tiles(spec)
    assert np.array_equal(a_cal, b_cal) and np.array_equal(a_check, b_check)
    assert len(a_cal) + len(a_check) == quantize.TILES and a_cal.min() >= -1 and a_cal.max() <= 1


def test_without_shared_data_the_check_holds_real_tiles_it_did_not_calibrate_on(monkeypatch, tmp_path: Path) -> None:
    """Checked on synthetic scenes alone, a fallback sat2map int8 passed (99.5 %) yet agreed on
    98.6 % of maps val: half the demo raster's real tiles now check, the other half calibrate."""
    monkeypatch.setenv("GEOPIX_CALIBRATION_DATA", str(tmp_path / "absent"))
    spec = load_checkpoint(random_checkpoint(tmp_path / "m.safetensors", ngf=4)).spec
    demo = Path(quantize.__file__).resolve().parents[1] / "demo_data" / "nairobi_oam.tif"
    real = np.stack(quantize._raster_tiles([demo], spec, quantize.TILES // 2, resample=False))
    calibrate, check = quantize.calibration_tiles(spec)

    def holds(stack: np.ndarray) -> int:
        return sum(any(np.array_equal(t, r) for t in stack) for r in real)

    assert holds(check) == holds(calibrate) == len(real) // 2 > 0


_COUNT_TELEMETRY = """
import sys
sent = []
from openvino_telemetry.utils import sender
sender.TelemetrySender.send = lambda self, backend, message: sent.append(message)
if sys.argv[1] == "geopix":
    from geopix.runtime import openvino
    openvino()
else:
    import openvino
print(len(sent))
"""


@pytest.mark.parametrize(
    ("how", "consent", "sent"),
    [("plain", None, 1), ("geopix", None, 0), ("geopix", "0", 0), ("geopix", "1", 1)],
)
def test_openvino_reports_nothing_unless_the_user_opted_in(
    tmp_path: Path, how: str, consent: str | None, sent: int
) -> None:
    """A plain ``import openvino`` posts a usage event to Google Analytics (the first case shows
    the counter sees it); through geopix nothing is sent, unless ``opt_in_out --opt_in`` wrote "1"."""
    import os
    import subprocess

    pytest.importorskip("openvino")
    pytest.importorskip("openvino_telemetry")
    if consent is not None:
        (tmp_path / "intel").mkdir()
        (tmp_path / "intel" / "openvino_telemetry").write_text(consent)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # it is off in CI
    env["HOME"] = str(tmp_path)  # where the consent file lives
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_TELEMETRY, how], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(sent)


@needs_int8
@pytest.mark.parametrize(("isa", "transposed"), [("avx2", False), ("vnni", True)])
def test_on_avx2_the_int8_graph_has_no_transposed_convolutions(
    palette_model: Path, monkeypatch, tmp_path: Path, isa: str, transposed: bool
) -> None:
    """OpenVINO runs transposed convolutions in f32 on AVX2 without VNNI: there the graph has plain ones.
    Either graph leaves its output f32 (rounding the AVX2 graph's logits to 8 bits cost sat2map 0.27
    points of class agreement)."""
    monkeypatch.setenv("GEOPIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(quantize, "int8_isa", lambda: isa)
    model = load_checkpoint(palette_model)
    built = quantize.int8_model(palette_model, model.spec, model.net)
    assert ("ConvolutionBackpropData" in built.path.read_text()) == transposed
    assert built.passes
    # the network's output (the logits) stays f32: nothing is quantized after the last convolution
    ops = pytest.importorskip("openvino").Core().read_model(str(built.path)).get_ordered_ops()
    last = max(i for i, op in enumerate(ops) if op.get_type_name() in ("Convolution", "ConvolutionBackpropData"))
    assert [op.get_type_name() for op in ops[last:]].count("FakeQuantize") == 0


def test_the_shipped_int8_models_belong_to_the_shipped_checkpoints_and_this_recipe() -> None:
    """A retrained checkpoint or a new recipe must come with its int8 models made again
    (``python -m geopix.models.quantize --ship sat2map`` on each CPU class), or none are used."""
    from geopix.models.distribute import sha256_file
    from geopix.models.registry import WEIGHTS_DIR

    metas = sorted(quantize.SHIPPED_DIR.glob("*.json"))
    assert metas, "geopix ships int8 models for sat2map"
    for path in metas:
        meta = json.loads(path.read_text())
        assert meta["recipe"] == quantize.RECIPE, path.name
        assert sha256_file(WEIGHTS_DIR / meta["checkpoint"]) == meta["checkpoint_sha256"], path.name
        assert meta["agreement"] >= quantize.MIN_AGREEMENT and path.with_suffix(".bin").stat().st_size > 10**6
        assert path.stem.split(".")[1] == "-".join(meta["int8_isas"]) and meta["int8_isa"] in meta["int8_isas"]
        # the AVX2 graph has no transposed convolutions (quantize.build_int8); the others keep them
        assert ("ConvolutionBackpropData" in path.with_suffix(".xml").read_text()) == (meta["int8_isa"] != "avx2")
        if meta["checked"].startswith("exact"):  # made and checked as another class computes: exact ones only
            assert set(meta["int8_isas"]) <= set(EXACT_INT8_ISAS), path.name
        else:
            assert meta["int8_isas"] == [meta["int8_isa"]] and meta["checked"].endswith(meta["int8_isa"])


@pytest.mark.parametrize("isa", ["avx2", "vnni", "amx", "dotprod"])
def test_without_the_developers_data_the_shipped_int8_model_is_used_where_one_fits(
    monkeypatch, tmp_path: Path, isa: str
) -> None:
    pytest.importorskip("openvino")
    from geopix.models.registry import load_model

    monkeypatch.setenv("GEOPIX_CALIBRATION_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("GEOPIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(quantize, "int8_isa", lambda: isa)
    shipped = _shipped_classes()
    assert {"avx2", "vnni", "amx"} <= shipped

    monkeypatch.setattr(quantize, "build_int8", _no_build)
    model = load_model("sat2map")
    if isa in shipped:
        got = quantize.int8_model(model.path, model.spec, model.net)
        assert got.path.parent == quantize.SHIPPED_DIR and got.passes and got.calibration.startswith("developers'")
        assert isa in json.loads(got.path.with_suffix(".json").read_text())["int8_isas"]
    else:  # no shipped model for this class: made here, from the fallback tiles
        with pytest.raises(AssertionError, match="built although"):
            quantize.int8_model(model.path, model.spec, model.net)


@needs_int8
def test_a_model_shipped_from_the_developers_data_serves_a_machine_without_it(
    palette_model: Path, tmp_path: Path, monkeypatch
) -> None:
    from geopix.models.distribute import sha256_file

    data = _developers_data(tmp_path / "data")
    monkeypatch.setattr(quantize, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setenv("GEOPIX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OptionError, match="developers' data"):
        quantize.ship_int8(palette_model, tmp_path / "absent")
    xml = quantize.ship_int8(palette_model, data)
    meta = json.loads(xml.with_suffix(".json").read_text())
    here = quantize.int8_isa()
    assert meta["checkpoint_sha256"] == sha256_file(palette_model) and meta["int8_isas"] == [here]
    assert meta["calibration"] == "developers' data: maps/train 48, real 0" and "/" not in meta["checkpoint"]
    assert meta["checked"] == f"natively, on a CPU of class {here}"
    # VNNI and AMX sum int8 products exactly: any CPU makes and checks their one model as they compute
    exact = quantize.ship_int8(palette_model, data, ("vnni", "amx"))
    meta = json.loads(exact.with_suffix(".json").read_text())
    assert exact.name == "palette.vnni-amx.xml" and meta["int8_isa"] == "vnni" and meta["checked"].startswith("exact")
    assert "ConvolutionBackpropData" in exact.read_text() and meta["agreement"] >= quantize.MIN_AGREEMENT

    monkeypatch.setattr(quantize, "build_int8", _no_build)
    monkeypatch.setenv("GEOPIX_CALIBRATION_DATA", str(tmp_path / "absent"))
    model = load_checkpoint(palette_model)
    assert quantize.int8_model(palette_model, model.spec, model.net).path == xml
    assert not (tmp_path / "cache" / "int8").exists() or not list((tmp_path / "cache" / "int8").glob("*.xml"))
    assert quantize.shipped_int8(palette_model, "amx").path == exact
    assert quantize.shipped_int8(palette_model, "vnni").path == exact


@pytest.mark.parametrize("isas", [("avx2",), ("vnni", "avx2"), ("dotprod",)])
def test_a_model_for_a_class_whose_sums_saturate_is_made_only_on_its_own_cpus(
    palette_model: Path, tmp_path: Path, monkeypatch, isas: tuple
) -> None:
    """AVX2's int8 multiply-adds saturate pairs of products at 16 bits (Arm's kernels are their own):
    no other CPU computes what they compute, so none may check a model for them."""
    pytest.importorskip("openvino")
    monkeypatch.setattr(quantize, "int8_isa", lambda: "amx")
    monkeypatch.setattr(quantize, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(quantize, "build_int8", _no_build)
    (tmp_path / "data" / "maps" / "train").mkdir(parents=True)
    with pytest.raises(OptionError, match=f"--isa {','.join(isas)}: this CPU \\(amx\\)"):
        quantize.ship_int8(palette_model, tmp_path / "data", isas)


def _developers_data(data: Path) -> Path:
    """A stand-in for the developers' data folder: six maps-style pairs (photo | map side by side)."""
    from PIL import Image

    from geopix.testing import _scene

    (data / "maps" / "train").mkdir(parents=True)
    for i in range(6):
        aerial, mapimg = _scene((300, 300), 50 + i)
        Image.fromarray(np.concatenate([aerial, mapimg], 1).astype(np.uint8)).save(data / "maps" / "train" / f"{i}.jpg")
    return data


@needs_int8
def test_the_layer_that_reads_the_image_is_int8_only_when_the_developers_data_calibrates_it_off_avx2(
    palette_model: Path, tmp_path: Path, monkeypatch
) -> None:
    """The fallback tiles' colours are not the user's: with VNNI's exact sums sat2map's fallback
    model agreed on 98.60 % of maps val with an int8 first layer (its own check said 99.32 %), 99.40 %
    with it fp32.  On AVX2 it is fp32 with any data (saturation)."""
    ov = pytest.importorskip("openvino")
    model = load_checkpoint(palette_model)
    data = _developers_data(tmp_path / "data")
    for isa, folder, int8_first in [("vnni", data, True), ("vnni", None, False), ("avx2", data, False)]:
        monkeypatch.setenv("GEOPIX_CALIBRATION_DATA", str(folder or tmp_path / "absent"))
        monkeypatch.setenv("GEOPIX_CACHE_DIR", str(tmp_path / "cache" / isa / str(bool(folder))))
        monkeypatch.setattr(quantize, "int8_isa", lambda isa=isa: isa)
        monkeypatch.setattr(quantize, "shipped_int8", lambda *a: None)
        built = quantize.int8_model(palette_model, model.spec, model.net)
        ops = ov.Core().read_model(str(built.path)).get_ordered_ops()
        first = next(op for op in ops if op.get_type_name() == "Convolution")
        assert (first.input_value(0).get_node().get_type_name() == "FakeQuantize") == int8_first, (isa, folder)


@pytest.mark.parametrize("isa", ["avx2", "vnni"])
def test_a_shipped_int8_model_agrees_with_fp32_as_its_record_says(isa: str) -> None:
    """The record's agreement is measured, not written: recomputed on the same held-out tiles of the
    developers' data, as the class computes it (VNNI and AMX exactly, on any CPU; AVX2 only on AVX2)."""
    pytest.importorskip("openvino")
    from geopix.models.registry import load_model
    from geopix.runtime import exact_int8, int8_isa

    data = quantize.calibration_data()
    if data is None or not (data / "maps" / "train").is_dir():
        pytest.skip("needs the developers' data (../shared/data or $GEOPIX_CALIBRATION_DATA)")
    if isa not in EXACT_INT8_ISAS and int8_isa() != isa:
        pytest.skip(f"{isa}'s int8 is computed only by {isa} CPUs")
    loaded = load_model("sat2map")
    shipped = quantize.shipped_int8(loaded.path, isa)
    _, check = quantize.calibration_tiles(loaded.spec, data)
    with exact_int8(isa) if isa in EXACT_INT8_ISAS else contextlib.nullcontext():
        agreement = quantize.measure_agreement(loaded.spec, loaded.net, shipped.path, check, shipped.prescaled)
    assert len(check) == shipped.check_tiles
    assert agreement == pytest.approx(shipped.agreement, abs=1e-3)
