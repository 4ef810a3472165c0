"""Generator layout vs the authors' checkpoints; our self-describing format; refusing bad files."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geopix.errors import CheckpointError, ModelNotAvailableError
from geopix.infer import Predictor
from geopix.models import registry
from geopix.models.checkpoint import ModelSpec, load_checkpoint, save_checkpoint, spec_from_official_state
from geopix.models.export import average_states, export_checkpoint
from geopix.models.generator import NLayerDiscriminator, UnetGenerator, count_parameters
from geopix.models.registry import REGISTRY, WEIGHTS_DIR, load_model
from geopix.testing import random_checkpoint


def official_shapes(ngf: int = 64) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the authors' unet_256 (batch norm), written out from their networks.py."""
    shapes: dict[str, tuple[int, ...]] = {}
    # (outer_nc, inner_nc) from the innermost block outwards, as UnetGenerator builds them
    levels = [(8, 8)] * 3 + [(4, 8), (2, 4), (1, 2)]
    # A middle block is [LeakyReLU, conv, norm, submodule, ReLU, upconv, norm(, dropout)]:
    # its child sits at index 3.
    for depth, (o, i) in enumerate(reversed(levels)):  # outermost-but-one first
        p = "model.model.1." + "model.3." * depth
        outer, inner = o * ngf, i * ngf
        shapes[p + "model.1.weight"] = (inner, outer, 4, 4)
        shapes[p + "model.2.weight"] = (inner,)
        shapes[p + "model.2.bias"] = (inner,)
        shapes[p + "model.2.running_mean"] = (inner,)
        shapes[p + "model.2.running_var"] = (inner,)
        shapes[p + "model.5.weight"] = (inner * 2, outer, 4, 4)
        shapes[p + "model.6.weight"] = (outer,)
        shapes[p + "model.6.bias"] = (outer,)
        shapes[p + "model.6.running_mean"] = (outer,)
        shapes[p + "model.6.running_var"] = (outer,)
    p = "model.model.1." + "model.3." * 6  # innermost: [LeakyReLU, conv, ReLU, upconv, norm]
    shapes[p + "model.1.weight"] = (8 * ngf, 8 * ngf, 4, 4)
    shapes[p + "model.3.weight"] = (8 * ngf, 8 * ngf, 4, 4)
    for s in ("weight", "bias", "running_mean", "running_var"):
        shapes[p + f"model.4.{s}"] = (8 * ngf,)
    shapes["model.model.0.weight"] = (ngf, 3, 4, 4)
    shapes["model.model.3.weight"] = (2 * ngf, 3, 4, 4)
    shapes["model.model.3.bias"] = (3,)
    return shapes


def test_unet_256_matches_the_official_parameter_count_and_names() -> None:
    net = UnetGenerator(ngf=64)
    assert count_parameters(net) == 54_413_955
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == official_shapes(64)


def test_official_state_dict_without_num_batches_tracked_loads(tmp_path: Path) -> None:
    state = {k: torch.randn(s) if len(s) > 1 else torch.rand(s) + 0.5 for k, s in official_shapes(8).items()}
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    model = load_checkpoint(path)
    assert model.spec.ngf == 8 and model.spec.num_downs == 8 and model.spec.norm == "batch"
    assert model.spec.source == "official-pth" and not model.net.training
    assert torch.equal(model.net.state_dict()["model.model.0.weight"], state["model.model.0.weight"])


def test_patchgan_is_70x70() -> None:
    d = NLayerDiscriminator(6, 64, 3)
    out = d(torch.zeros(1, 6, 256, 256))
    assert out.shape == (1, 1, 30, 30) and count_parameters(d) == 2_768_705


def test_our_format_round_trips_its_metadata(tmp_path: Path) -> None:
    spec = ModelSpec(
        ngf=4,
        head="palette",
        palette=((1, 2, 3), (4, 5, 6)),
        output_nc=2,
        direction="BtoA",
        ground_resolution_m=1.7,
        use_dropout=False,
    )
    net = spec.build()
    path = save_checkpoint(net, spec, tmp_path / "m.safetensors", half=True)
    loaded = load_checkpoint(path)
    assert loaded.spec == spec
    assert loaded.net.state_dict()["model.model.0.weight"].dtype == torch.float32


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model.model.0.weight": Evil()}, path)
    with pytest.raises(CheckpointError, match="never unpickles code") as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value) and "will likely succeed" not in str(info.value)
    assert "torch.save(net.state_dict()" in str(info.value)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_pickles_of_any_protocol_are_read_as_pytorch_not_safetensors(tmp_path: Path, protocol: int) -> None:
    """torch.save's pre-zip format is a pickle stream; protocols 3–5 used to be called bad safetensors."""
    good = random_checkpoint(tmp_path / "m.pth", ngf=4, official=True)
    state = torch.load(good, weights_only=True)
    legacy = tmp_path / f"legacy{protocol}.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    assert legacy.read_bytes()[:2] == bytes([0x80, protocol])
    if protocol <= 3:
        assert load_checkpoint(legacy).spec.ngf == 4
    else:  # framed streams: PyTorch's weights-only unpickler cannot read them; say so, and the fix
        with pytest.raises(CheckpointError, match=f"newer protocol \\({protocol}\\).*torch.save"):
            load_checkpoint(legacy)
    junk = tmp_path / f"junk{protocol}.pth"
    junk.write_bytes(pickle.dumps({"a": print}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(junk)
    assert "safetensors" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_corrupt_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_checkpoint(path)


def test_mismatched_checkpoint(tmp_path: Path) -> None:
    path = random_checkpoint(tmp_path / "m.pth", ngf=4, official=True)
    state = torch.load(path, weights_only=True)
    state["model.model.3.bias"] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"model\.model\.3\.bias"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a pix2pix unet"):
        spec_from_official_state({"foo": torch.zeros(1)})


def test_registry_names_and_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="neither a registry name"):
        load_model(tmp_path / "nope.safetensors")
    with monkeypatch.context() as m:  # a copy of geopix without its weights files
        m.setattr(registry, "WEIGHTS_DIR", tmp_path)
        with pytest.raises(ModelNotAvailableError, match=r"geopix train data/maps --recipe map2sat"):
            load_model("map2sat")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_models_describe_themselves(name: str) -> None:
    """Both shipped generators load with no flags and declare the registry's direction."""
    model = load_model(name)
    assert model.spec.direction == REGISTRY[name].direction
    assert model.spec.ground_resolution_m > 0 and len(model.spec.input_stats) == 3
    assert (WEIGHTS_DIR / REGISTRY[name].filename).stat().st_size <= 30 * 2**20


def test_inference_is_a_pure_function_of_the_tile(checkpoint: Path) -> None:
    """Eval mode: a tile's output does not depend on its batch-mates or on being run twice."""
    model = load_checkpoint(checkpoint)
    pred = Predictor.from_loaded(model, "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 256, 256, generator=gen).numpy() * 2 - 1
    alone = pred.predict(x[:1])
    together = pred.predict(x)
    assert abs(alone[0] - together[0]).max() < 1e-3
    assert (pred.predict(x) == together).all()


def test_export_halves_weights_and_corrects_metadata(checkpoint: Path, tmp_path: Path) -> None:
    from geopix.cli import main

    dst = tmp_path / "ship.safetensors"
    note = tmp_path / "note.json"
    note.write_text('{"acc_5": 0.5}')
    assert main(["export", str(checkpoint), str(dst), "--ground-resolution", "1.888", "--note", str(note)]) == 0
    shipped, orig = load_checkpoint(dst), load_checkpoint(checkpoint)
    assert shipped.spec.ground_resolution_m == 1.888 and '"acc_5": 0.5' in shipped.spec.training
    w0 = shipped.net.state_dict()["model.model.0.weight"]
    assert torch.allclose(w0, orig.net.state_dict()["model.model.0.weight"], atol=1e-3)
    assert dst.stat().st_size < checkpoint.stat().st_size


def test_export_averages_weights_with_another_checkpoint(tmp_path: Path) -> None:
    """--average-with: every float tensor (BatchNorm statistics too) is the weighted mean, in fp32."""
    from geopix.cli import main

    a = random_checkpoint(tmp_path / "a.safetensors", seed=1, ground_resolution_m=1.5)
    b = random_checkpoint(tmp_path / "b.safetensors", seed=2, ground_resolution_m=3.0)
    dst = tmp_path / "avg.safetensors"
    args = ["export", str(a), str(dst), "--full", "--average-with", str(b), "--average-weight", "0.25"]
    assert main(args) == 0
    sa, sb = load_checkpoint(a).net.state_dict(), load_checkpoint(b).net.state_dict()
    made = load_checkpoint(dst)
    for k, v in made.net.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, 0.75 * sa[k] + 0.25 * sb[k]), k
        else:
            assert torch.equal(v, sa[k]), k
    assert made.spec.ground_resolution_m == 1.5  # the metadata is SRC's
    assert '"averaged_with": {"model": "' + str(b) + '", "weight": 0.25}' in made.spec.training
    # weight 0 is SRC itself; 1 is the other's weights under SRC's metadata
    assert all(torch.equal(average_states(sa, sb, 0.0)[k].to(v.dtype), v) for k, v in sa.items())
    assert all(torch.equal(average_states(sa, sb, 1.0)[k].to(v.dtype), sb[k]) for k, v in sa.items())


def test_averaging_refuses_other_architectures_and_weights_outside_0_1(tmp_path: Path) -> None:
    from geopix.cli import main

    a = random_checkpoint(tmp_path / "a.safetensors", ngf=4)
    wide = random_checkpoint(tmp_path / "wide.safetensors", ngf=8)
    with pytest.raises(CheckpointError, match="different architectures"):
        export_checkpoint(a, tmp_path / "x.safetensors", average_with=wide)
    state = load_checkpoint(a).net.state_dict()
    with pytest.raises(CheckpointError, match=r"--average-weight 1\.5"):
        average_states(state, state, 1.5)
    y = str(tmp_path / "y.safetensors")
    assert main(["export", str(a), y, "--average-with", str(wide)]) == CheckpointError.exit_code
    assert main(["export", str(a), y, "--average-with", str(a), "--average-weight", "2"]) != 0
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_palette_sharpness_moves_from_argmax_to_the_expected_colour() -> None:
    from geopix.models.generator import palette_to_rgb

    palette = ((0, 0, 0), (200, 100, 50))
    logits = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    hard = palette_to_rgb(logits, palette)
    assert hard.flatten().tolist() == [0, 0, 0]
    soft = palette_to_rgb(logits, palette, 1.0).flatten()
    p1 = float(torch.softmax(torch.tensor([2.0, 1.0]), 0)[1])
    torch.testing.assert_close(soft, torch.tensor([200 * p1, 100 * p1, 50 * p1]))
    sharp = palette_to_rgb(logits, palette, 50.0).flatten()
    assert float(sharp.abs().max()) < 1e-6 * 200 + 1e-12 or float(sharp.max()) < 1e-10


def test_palette_bias_shifts_the_decision_and_travels_in_the_checkpoint(tmp_path: Path) -> None:
    from geopix.cli import main
    from geopix.errors import OptionError
    from geopix.models.generator import palette_to_rgb

    palette = ((0, 0, 0), (200, 100, 50))
    logits = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    assert palette_to_rgb(logits, palette, 0.0, (0.0, 0.9)).flatten().tolist() == [0, 0, 0]
    assert palette_to_rgb(logits, palette, 0.0, (0.0, 1.1)).flatten().tolist() == [200, 100, 50]
    soft = palette_to_rgb(logits, palette, 1.0, (0.0, 1.0)).flatten()  # equal logits: the mean colour
    torch.testing.assert_close(soft, torch.tensor([100.0, 50.0, 25.0]))

    dst = tmp_path / "biased.safetensors"
    assert main(["export", "sat2map", str(dst), "--class-bias", "building=1.5", "--class-bias", "water=-1"]) == 0
    spec = load_model(dst).spec
    by_colour = dict(zip(spec.palette, spec.palette_bias, strict=True))
    assert by_colour[(242, 240, 234)] == 1.5 and by_colour[(176, 207, 254)] == -1.0
    assert sum(b != 0 for b in spec.palette_bias) == 2
    # A metric group offsets every class in it: "road" is minor road, arterial and highway.
    from geopix.style import CLASS_NAMES, ROAD_CLASSES, palette_classes

    grouped = tmp_path / "roads.safetensors"
    assert main(["export", "sat2map", str(grouped), "--class-bias", "road=0.75"]) == 0
    spec = load_model(grouped).spec
    roads = {CLASS_NAMES.index(c) for c in ROAD_CLASSES}
    owner = palette_classes(spec.palette)
    assert [b for b, o in zip(spec.palette_bias, owner, strict=True) if b] == [0.75] * sum(o in roads for o in owner)
    assert sum(o in roads for o in owner) >= 3
    # The library call the CLI and the recipes share; an RGB head has no colours to offset.
    from geopix.models.registry import resolve_model

    lib = export_checkpoint(resolve_model("sat2map"), tmp_path / "lib.safetensors", class_bias={"road": 0.75})
    assert load_model(lib).spec.palette_bias == spec.palette_bias
    with pytest.raises(OptionError, match="need a palette-head checkpoint"):
        export_checkpoint(resolve_model("map2sat"), tmp_path / "bad.safetensors", class_bias={"building": 1.0})
    bad = tmp_path / "bad.safetensors"
    assert main(["export", "sat2map", str(bad), "--class-bias", "roof=1"]) == OptionError.exit_code
    assert main(["export", "sat2map", str(bad), "--class-bias", "building=lots"]) == OptionError.exit_code
    assert not bad.exists()
    with pytest.raises(CheckpointError, match="palette_bias has 1 values for 10"):
        dataclasses.replace(spec, palette_bias=(1.0,))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 8.0), sharpness=st.floats(0.5, 16.0))
def test_keep_class_blends_read_as_the_likeliest_class(seed: int, scale: float, sharpness: float) -> None:
    """Decoded, rounded to 8 bits and classified to the nearest style colour, every pixel shows
    the class of its argmax palette colour; plain blends do not (half road, half background is
    the building colour)."""
    from geopix.models.generator import palette_to_rgb
    from geopix.style import COLOURS, classify, palette_classes

    palette = load_model("sat2map").spec.palette
    logits = torch.randn(2, len(palette), 16, 16, generator=torch.Generator().manual_seed(seed)) * scale
    want = palette_classes(palette)[logits.argmax(1).numpy()]
    kept = palette_to_rgb(logits, palette, sharpness, (), torch.as_tensor(COLOURS))
    assert (classify(kept.round().permute(0, 2, 3, 1).numpy()) == want).all()
    plain = palette_to_rgb(logits, palette, sharpness)
    assert (kept - plain).abs().max() <= (plain - palette_to_rgb(logits, palette)).abs().max() + 1e-4


def test_keep_class_only_stops_blends_that_cross_a_class() -> None:
    from geopix.models.generator import palette_to_rgb
    from geopix.style import BY_NAME, COLOURS, classify

    palette = ((232, 229, 222), (253, 253, 251), (202, 222, 172))  # background, minor road, park
    road_bg = torch.tensor([1.0, 0.9, -9.0]).view(1, 3, 1, 1)  # nearly half road: blends to "building"
    plain = palette_to_rgb(road_bg, palette, 8.0).flatten()
    assert classify(plain.numpy()) == BY_NAME["building"].index
    kept = palette_to_rgb(road_bg, palette, 8.0, (), torch.as_tensor(COLOURS)).flatten()
    assert classify(kept.round().numpy()) == BY_NAME["background"].index
    assert (kept != torch.tensor([232.0, 229.0, 222.0])).any()  # moved towards the road, stopped in time
    bg_park = torch.tensor([1.0, -9.0, 0.9]).view(1, 3, 1, 1)  # background/park blends stay background
    torch.testing.assert_close(
        palette_to_rgb(bg_park, palette, 8.0, (), torch.as_tensor(COLOURS)), palette_to_rgb(bg_park, palette, 8.0)
    )


def test_keep_class_takes_the_largest_step_that_keeps_the_class() -> None:
    """Against the definition, pixel by pixel: t = min(1, min over the other classes j of
    slack_j / toward_j), the half-space ``x · (c_j − c_a) ≤ (|c_j|² − |c_a|²)/2 − |c_j − c_a|``
    (one RGB unit inside the bisector).  Targets anywhere in the RGB cube, so many cross a face:
    a clamp skipped, or one too short, shows."""
    from geopix.models.generator import keep_class
    from geopix.style import COLOURS

    palette = torch.tensor(load_model("sat2map").spec.palette, dtype=torch.float32)
    cc = torch.as_tensor(COLOURS)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, len(palette), (4000,), generator=g)
    start, target = palette[idx], torch.rand(4000, 3, generator=g) * 255
    got = keep_class(start, target, palette, idx, cc)
    owner = torch.cdist(palette, cc).argmin(1)[idx]
    want = torch.empty_like(got)
    for p in range(len(idx)):
        a, t = owner[p], 1.0
        for j in range(len(cc)):
            if j == a:
                continue
            n = cc[j] - cc[a]
            slack = max(0.0, float((cc[j] @ cc[j] - cc[a] @ cc[a]) / 2 - n.norm() - n @ start[p]))
            toward = float(n @ (target[p] - start[p]))
            if toward > 0:
                t = min(t, slack / toward)
        want[p] = start[p] + t * (target[p] - start[p])
    assert (got - want).abs().max() < 1e-2
    assert ((got - target).abs().amax(1) > 1).float().mean() > 0.3  # most of these targets were stopped


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 8.0), offset=st.floats(0.05, 2.0))
def test_offsets_that_decide_change_the_class_not_the_drawn_confidence(seed: int, scale: float, offset: float) -> None:
    """With ``bias_decides`` every pixel still reads as the class of its *shifted* argmax, but the
    colours are the unshifted blend's, kept in that class: identical wherever the offset changed no
    class; argmax decoding has no blend, so the mode does not change it."""
    from geopix.models.generator import palette_to_rgb
    from geopix.style import COLOURS, classify, palette_bias, palette_classes

    palette = load_model("sat2map").spec.palette
    bias = palette_bias(palette, {"building": offset, "road": offset / 2})
    logits = torch.randn(2, len(palette), 16, 16, generator=torch.Generator().manual_seed(seed)) * scale
    shifted = logits + torch.tensor(bias).view(1, -1, 1, 1)
    classes = torch.as_tensor(COLOURS)
    decided = palette_to_rgb(logits, palette, 8.0, bias, classes, bias_decides=True)
    plain = palette_to_rgb(logits, palette, 8.0, (), classes)
    want = palette_classes(palette)[shifted.argmax(1).numpy()]
    assert (classify(decided.round().permute(0, 2, 3, 1).numpy()) == want).all()
    same = torch.as_tensor(want == palette_classes(palette)[logits.argmax(1).numpy()])[:, None]
    torch.testing.assert_close(decided * same, plain * same)
    argmax = palette_to_rgb(logits, palette, 0.0, bias, classes)  # nothing to blend: the same either way
    torch.testing.assert_close(palette_to_rgb(logits, palette, 0.0, bias, classes, bias_decides=True), argmax)


def test_offsets_that_decide_need_the_class_kept(tmp_path: Path) -> None:
    from geopix.cli import main

    dst = tmp_path / "decides.safetensors"
    argv = ["export", "sat2map", str(dst), "--class-bias", "road=0.2", "--class-bias-decides"]
    assert main(argv) == 0
    spec = load_model(dst).spec
    assert spec.palette_bias_decides and spec.summary()["class_offsets_affect"] == "the class only"
    assert load_model("sat2map").spec.summary()["class_offsets_affect"] == "class and colour"
    bad = tmp_path / "bad.safetensors"
    assert main([*argv[:2], str(bad), *argv[3:], "--no-keep-class"]) == CheckpointError.exit_code
    assert not bad.exists()
    with pytest.raises(CheckpointError, match="needs palette_keep_class"):
        dataclasses.replace(spec, palette_keep_class=False)
    # A doubtful pixel the road offset moves across is drawn at the edge of the road's colours.
    from geopix.models.generator import palette_to_rgb
    from geopix.style import BY_NAME, COLOURS, classify

    palette = ((232, 229, 222), (253, 253, 251))  # background, minor road
    logits, bias = torch.tensor([1.0, 0.9]).view(1, 2, 1, 1), (0.0, 0.2)
    beige, white = torch.tensor(palette[0], dtype=torch.float32), torch.tensor(palette[1], dtype=torch.float32)
    shifted = palette_to_rgb(logits, palette, 8.0, bias, torch.as_tensor(COLOURS)).flatten()
    decided = palette_to_rgb(logits, palette, 8.0, bias, torch.as_tensor(COLOURS), bias_decides=True).flatten()
    assert classify(shifted.round().numpy()) == classify(decided.round().numpy()) == BY_NAME["minor_road"].index
    assert (decided - beige).norm() < (shifted - beige).norm() <= (white - beige).norm()
    inward = (beige - decided) / (beige - decided).norm()
    assert classify((decided + 2.0 * inward).numpy()) != BY_NAME["minor_road"].index  # just inside the road


def test_checkpoints_get_the_umask_mode(tmp_path: Path) -> None:
    """0644 under the usual umask: cluster workers running as another user can read them."""
    umask = os.umask(0o022)
    try:
        path = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
        exported = export_checkpoint(path, tmp_path / "e.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(exported.stat().st_mode) == 0o644


def test_export_overwrite_replaces_only_a_geopix_model_and_never_its_input(tmp_path: Path) -> None:
    """The output-ownership rule for ``geopix export``: --overwrite replaces a model file geopix
    wrote, never another file of that name, and never SRC (or --average-with) itself."""
    from geopix.cli import main
    from geopix.errors import OutputExistsError
    from geopix.testing import random_checkpoint

    src = random_checkpoint(tmp_path / "src.safetensors", head="palette")
    before = src.read_bytes()
    assert main(["export", str(src), str(src), "--overwrite"]) == OutputExistsError.exit_code
    other = random_checkpoint(tmp_path / "other.safetensors", head="palette")
    assert main(["export", str(other), str(src), "--average-with", str(src), "--overwrite"]) == 10
    assert src.read_bytes() == before  # the input is untouched
    notes = tmp_path / "notes.safetensors"
    notes.write_text("my notes, not a model")
    assert main(["export", str(src), str(notes), "--overwrite"]) == OutputExistsError.exit_code
    assert notes.read_text() == "my notes, not a model"
    dst = tmp_path / "dst.safetensors"
    assert main(["export", str(src), str(dst)]) == 0
    assert main(["export", str(other), str(dst)]) == OutputExistsError.exit_code  # exists: --overwrite needed
    assert main(["export", str(other), str(dst), "--overwrite"]) == 0  # a geopix model: replaced
