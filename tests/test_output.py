"""Claiming an output folder: one run at a time, nothing clobbered, nothing empty left behind."""

from __future__ import annotations

import os
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
