"""The stage configs of the library functions the CLI calls: each refuses a bad value naming the
option, is frozen, and is what a keyword call of its function builds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from geopix.config import CutConfig, EvalConfig, RealEvalConfig, RenderConfig, VectorPairsConfig, resolve_config
from geopix.errors import DatasetError, GeopixError, OptionError, TilingError

#: The required fields of each config, with harmless values.
REQUIRED: dict[type, dict[str, object]] = {
    EvalConfig: {"model": "sat2map", "data": "maps"},
    RealEvalConfig: {"model": "sat2map", "sets": (), "out_dir": "o"},
    CutConfig: {"source": "a.tif", "target": "b.tif", "out_dir": "o"},
    VectorPairsConfig: {"rasters": ("a.tif",), "layers": (), "out_dir": "o"},
}


@pytest.mark.parametrize(
    ("cls", "bad", "error", "needle"),
    [
        (EvalConfig, {"batch_size": 0}, OptionError, "--batch-size 0 must be at least 1; try --batch-size 8"),
        (EvalConfig, {"limit": 0}, OptionError, "--limit 0 must be at least 1"),
        (EvalConfig, {"baseline_color": (0, 0, 300)}, OptionError, "--baseline-color (0, 0, 300) must be three"),
        (EvalConfig, {"baseline_color": (1, 2)}, OptionError, "--baseline-color (1, 2) must be three"),
        (EvalConfig, {"source_resolution_m": 0.0}, OptionError, "--source-resolution 0.0 must be positive"),
        (EvalConfig, {"direction": "sideways"}, OptionError, "--direction 'sideways' must be one of AtoB, BtoA"),
        (EvalConfig, {"bn_mode": "both"}, OptionError, "--bn-mode 'both' must be one of eval, train"),
        (RealEvalConfig, {"device": "gpu"}, OptionError, "--device 'gpu' must be auto, cpu, cuda or cuda:N"),
        (RealEvalConfig, {"overlap": 200}, TilingError, "--overlap 200 must be >= 0"),
        (CutConfig, {"tile": 0}, TilingError, "--tile 0 and --stride 256 must be positive"),
        (CutConfig, {"stride": 0}, TilingError, "--tile 256 and --stride 0 must be positive"),
        (CutConfig, {"resolution_m": -1.0}, DatasetError, "--resolution -1.0 must be a positive number"),
        (VectorPairsConfig, {"tile": 1}, TilingError, "--tile 1 and --stride 0 must be positive"),
        (VectorPairsConfig, {"stride": 0}, TilingError, "--tile 256 and --stride 0 must be positive"),
        (VectorPairsConfig, {"resolution_m": 0.0}, DatasetError, "--resolution 0.0 must be a positive number"),
    ],
)
def test_a_bad_value_is_refused_naming_the_option(cls: type, bad: dict, error: type, needle: str) -> None:
    with pytest.raises(error) as info:
        cls(**REQUIRED[cls], **bad)
    assert needle in str(info.value)


@pytest.mark.parametrize("cls", list(REQUIRED))
def test_configs_are_frozen_and_build_with_defaults(cls: type) -> None:
    config = cls(**REQUIRED[cls])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.out_dir = "elsewhere"


def test_vector_pairs_step_defaults_to_half_a_tile() -> None:
    assert VectorPairsConfig(**REQUIRED[VectorPairsConfig], tile=128).step == 64
    assert VectorPairsConfig(**REQUIRED[VectorPairsConfig], tile=128, stride=100).step == 100


def test_resolve_config_builds_from_keywords_or_passes_the_config_through() -> None:
    built = resolve_config(EvalConfig, None, {"model": "sat2map", "data": "maps", "limit": 3}, "evaluate")
    assert built == EvalConfig("sat2map", "maps", limit=3)
    assert resolve_config(EvalConfig, built, {}, "evaluate") is built
    with pytest.raises(TypeError, match=r"evaluate\(\) takes a config \(EvalConfig\) or keyword arguments, not both"):
        resolve_config(EvalConfig, built, {"limit": 4}, "evaluate")
    with pytest.raises(GeopixError, match=r"make_pairs\(\) needs target= and out_dir=, or a config \(CutConfig\)"):
        resolve_config(CutConfig, None, {"source": "a.tif"}, "make_pairs")
    with pytest.raises(OptionError, match="--limit 0"):
        resolve_config(EvalConfig, None, {"model": "sat2map", "data": "maps", "limit": 0}, "evaluate")


def test_render_keywords_are_gathered_into_the_nested_configs(tmp_path: Path) -> None:
    from geopix.pipeline import render

    # refused while the config is built: before the input is even looked at
    with pytest.raises(TilingError, match="--overlap 200"):
        render(input=str(tmp_path / "absent.tif"), output_dir=tmp_path / "o", overlap=200)
    with pytest.raises(OptionError, match="--device 'gpu'"):
        render(input=str(tmp_path / "absent.tif"), output_dir=tmp_path / "o", device="gpu")
    with pytest.raises(GeopixError, match=r"render\(\) needs input="):
        render(output_dir=tmp_path / "o")
    with pytest.raises(TypeError, match="not both: overlap"):
        render(RenderConfig(input="a.tif", output_dir=tmp_path / "o"), overlap=32)
    assert not (tmp_path / "o").exists()
