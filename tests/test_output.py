"""Claiming an output folder: one run at a time, nothing clobbered, nothing empty left behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from geopix.errors import OutputExistsError, OutputLockedError, OutputNotWritableError
from geopix.output import LOCK_NAME, check_output, claim_output


def test_a_second_claim_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with claim_output(out, ["map.tif"], overwrite=False):
        assert (out / LOCK_NAME).read_text() == str(os.getpid())
        held = rf"{out} is in use by another geopix run \(pid {os.getpid()}\)"
        with pytest.raises(OutputLockedError, match=held), claim_output(out, ["map.tif"], overwrite=True):
            pass
        (out / "map.tif").write_bytes(b"first")
    assert not (out / LOCK_NAME).exists() and (out / "map.tif").read_bytes() == b"first"
    with pytest.raises(OutputExistsError, match="--overwrite"), claim_output(out, ["map.tif"], overwrite=False):
        pass
    with claim_output(out, ["map.tif"], overwrite=True):
        pass


def test_a_failed_run_removes_the_folder_it_created_if_empty(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), claim_output(out, ["map.tif"], overwrite=False):
        raise RuntimeError("late error")
    assert not out.exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError), claim_output(kept, ["map.tif"], overwrite=False):
        (kept / "map.zarr").mkdir()  # resumable work: stays
        raise RuntimeError("late error")
    assert (kept / "map.zarr").exists() and not (kept / LOCK_NAME).exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), claim_output(existing, ["map.tif"], overwrite=False):
        raise RuntimeError("late error")
    assert existing.is_dir()  # not ours to remove


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(OutputNotWritableError, match="choose another OUT"):
        check_output(ro, ["x"], overwrite=False, option="OUT")


# ---- issue 26 cases 1-3: one ownership rule for every command that writes -------------------
def _tiny_map(path: Path) -> Path:
    from tests.test_pyramid import make_map

    return make_map(path, 64, masked=False)


@contextlib.contextmanager
def held_by_another_run(folder: Path) -> Iterator[None]:
    """``folder``'s lock as a running render holds it (another open file: flock conflicts as across processes)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"4242")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)


def _tiles(*args: str) -> int:
    from geopix.cli import main

    return main(["tiles", *args, "--zoom", "14-15", "--scheduler", "sync", "--no-progress"])


def test_tiles_overwrite_never_replaces_the_folder_holding_its_input(tmp_path: Path, capsys) -> None:
    """Case 1: ``geopix tiles out/self/map.tif out/self --overwrite`` refuses; map.tif and render.json stay."""
    out = tmp_path / "self"
    out.mkdir()
    map_tif = _tiny_map(out / "map.tif")
    (out / "render.json").write_text("{}")
    before = sorted(p.name for p in out.iterdir())
    assert _tiles(str(map_tif), str(out)) == OutputExistsError.exit_code
    first = capsys.readouterr().err
    assert "--overwrite" not in first and "choose another OUT" in first  # never steered into deleting
    assert _tiles(str(map_tif), str(out), "--overwrite") == OutputExistsError.exit_code
    assert "would replace the input" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    # "." is the same folder, spelled otherwise (case 12: no "unexpected ValueError")
    cwd = os.getcwd()
    os.chdir(out)
    try:
        assert _tiles("map.tif", ".", "--overwrite") == OutputExistsError.exit_code
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in out.iterdir()) == before


def test_tiles_overwrite_replaces_a_tile_set_and_nothing_else(tmp_path: Path, capsys) -> None:
    map_tif = _tiny_map(tmp_path / "map.tif")
    tiles = tmp_path / "tiles"
    assert _tiles(str(map_tif), str(tiles)) == 0
    assert _tiles(str(map_tif), str(tiles)) == OutputExistsError.exit_code  # ours: --overwrite is offered
    assert "--overwrite" in capsys.readouterr().err
    assert _tiles(str(map_tif), str(tiles), "--overwrite") == 0 and (tiles / "tilejson.json").is_file()
    (tiles / "notes.txt").write_text("mine")  # now it holds something geopix did not write
    assert _tiles(str(map_tif), str(tiles), "--overwrite") == OutputExistsError.exit_code
    assert "notes.txt" in capsys.readouterr().err and (tiles / "notes.txt").read_text() == "mine"
    archive = tmp_path / "photo.pmtiles"
    archive.write_bytes(b"\x89PNG not an archive")
    assert _tiles(str(map_tif), str(archive), "--overwrite") == OutputExistsError.exit_code
    assert archive.read_bytes() == b"\x89PNG not an archive"
    assert _tiles(str(map_tif), str(tmp_path / "t.pmtiles")) == 0
    assert _tiles(str(map_tif), str(tmp_path / "t.pmtiles"), "--overwrite") == 0


def test_tiles_overwrite_is_refused_while_another_run_holds_the_folder(tmp_path: Path) -> None:
    """Case 2: a render holds OUT's lock; ``geopix tiles ... OUT --overwrite`` is refused and deletes nothing."""
    map_tif = _tiny_map(tmp_path / "map.tif")
    out = tmp_path / "tiles"
    assert _tiles(str(map_tif), str(out)) == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with held_by_another_run(out):
        assert _tiles(str(map_tif), str(out), "--overwrite") == OutputLockedError.exit_code
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted([*before, LOCK_NAME])
    with held_by_another_run(tmp_path):  # the folder that would get OUT.partial
        assert _tiles(str(map_tif), str(out), "--overwrite") == OutputLockedError.exit_code
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_render_overwrite_never_replaces_a_foreign_xyz_folder(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Case 3: ``render --overwrite --xyz NAME`` refuses (before rendering) when NAME holds user files."""
    from geopix.cli import main

    out = tmp_path / "o"
    (out / "web").mkdir(parents=True)
    (out / "web" / "holiday.jpg").write_bytes(b"mine")
    args = ["render", str(aerial), "-o", str(out), "--model", str(checkpoint), "--scheduler", "sync"]
    assert main([*args, "--xyz", "web", "--overwrite", "--no-progress"]) == OutputExistsError.exit_code
    assert (out / "web" / "holiday.jpg").read_bytes() == b"mine" and not (out / "map.tif").exists()


def test_predict_overwrite_never_replaces_its_input_photos(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Case 3: ``geopix predict DIR DIR --overwrite`` refuses; the photos stay."""
    from PIL import Image

    from geopix.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (90, 120, 60)).save(photos / "a.png")
    before = (photos / "a.png").read_bytes()
    args = ["predict", str(photos), str(photos), "--model", str(checkpoint), "--overwrite"]
    assert main(args) == OutputExistsError.exit_code
    assert "would replace the input" in capsys.readouterr().err
    assert (photos / "a.png").read_bytes() == before
    assert main(["predict", str(photos), str(tmp_path / "maps"), "--model", str(checkpoint)]) == 0


def test_dataset_overwrite_replaces_only_a_dataset_and_honours_the_lock(tmp_path: Path) -> None:
    from geopix.data.pair_writer import MANIFEST, PairWriter

    out = tmp_path / "pairs"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"thesis\.tex"):
        PairWriter(out, tile=8, stride=8, overwrite=True)
    (out / "thesis.tex").unlink()
    (out / MANIFEST).write_text("{}")
    with (
        held_by_another_run(tmp_path),
        pytest.raises(OutputLockedError),
        PairWriter(out, tile=8, stride=8, overwrite=True),
    ):
        pass
    with PairWriter(out, tile=8, stride=8, overwrite=True) as writer:
        writer.publish({"pairs": 0})
    assert (out / MANIFEST).read_text().startswith("{")


def test_render_overwrite_never_replaces_its_input(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    """``geopix render out/map.tif -o out --overwrite`` (re-mapping a map in place) refuses; the input stays."""
    import shutil

    from geopix.cli import main

    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(aerial, out / "map.tif")
    before = (out / "map.tif").read_bytes()
    args = ["render", str(out / "map.tif"), "-o", str(out), "-m", str(checkpoint), "--overwrite", "--no-progress"]
    assert main([*args, "--scheduler", "sync"]) == OutputExistsError.exit_code
    assert (out / "map.tif").read_bytes() == before
