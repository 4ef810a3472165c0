"""Training internals: exact resume, Ctrl-C, crashes, resume checks, and DDP on CPU (gloo)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geopix.config import PRESETS, TrainConfig
from geopix.errors import GeopixError, Interrupted, ResumeError
from geopix.models.export import export_checkpoint
from geopix.models.registry import load_model
from geopix.testing import synthetic_maps_dataset
from geopix.train import Trainer, train
from geopix.train_state import GENERATOR, LOG, STATE


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_maps_dataset(tmp_path_factory.mktemp("maps"), n_train=4, n_val=1, size=256)


def _cfg(data: Path, run_dir: Path, preset: str = "pix2pix", **kw: object) -> TrainConfig:
    """Tiny and quick: ngf 4, 2 batches of 2 per epoch, one thread, CPU."""
    values: dict[str, object] = {**PRESETS[preset], "ngf": 4, "ndf": 4, "palette_size": 4, "batch_size": 2}
    values |= {"epochs": 1, "epochs_decay": 1, "threads": 1, "device": "cpu"}
    values |= kw
    return TrainConfig(data=data, run_dir=run_dir, **values)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / GENERATOR))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int, exc: type[BaseException]) -> None:
    """Make ``Trainer.step`` raise ``exc`` at the ``step``-th step (0-based) of ``epoch`` (0-based)."""
    original = Trainer.step
    calls: dict[int, int] = {}

    def failing_step(self: Trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        n = calls.get(self.state.epoch, 0)
        calls[self.state.epoch] = n + 1
        if self.state.epoch == epoch and n == step:
            raise exc("stop here")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", failing_step)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    """Uninterrupted 2-epoch runs of both presets: what every resumed run must reproduce bit for bit."""
    out = {}
    for preset in ("pix2pix", "palette"):
        run = tmp_path_factory.mktemp(f"ref-{preset}")
        train(_cfg(data, run, preset))
        out[preset] = _weights(run)
    return out


@pytest.mark.parametrize("preset", ["pix2pix", "palette"])
@pytest.mark.parametrize("where", ["epoch boundary", "mid-epoch"])
def test_ctrl_c_then_resume_is_exact(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict, preset: str, where: str
) -> None:
    step = 0 if where == "epoch boundary" else 1
    with monkeypatch.context() as m:
        _interrupt_at(m, epoch=1, step=step, exc=KeyboardInterrupt)
        with pytest.raises(Interrupted, match="rerun with --resume"):
            train(_cfg(data, tmp_path, preset))
    state = torch.load(tmp_path / STATE, weights_only=True)
    assert int(state["epoch"]) == 1
    train(_cfg(data, tmp_path, preset, resume=True))
    _assert_same(_weights(tmp_path), reference[preset])
    rows = (tmp_path / LOG).read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]  # the log is not duplicated


def test_crash_then_resume_is_exact(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference) -> None:
    """A hard failure mid-epoch leaves the last epoch's state.pt, which resumes exactly."""
    with monkeypatch.context() as m:
        _interrupt_at(m, epoch=1, step=1, exc=RuntimeError)
        with pytest.raises(RuntimeError):
            train(_cfg(data, tmp_path))
    train(_cfg(data, tmp_path, resume=True))
    _assert_same(_weights(tmp_path), reference["pix2pix"])


def test_ctrl_c_in_the_first_step_saves_state(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_at(monkeypatch, epoch=0, step=0, exc=KeyboardInterrupt)
    with pytest.raises(Interrupted, match=r"saved epoch 0 and the partial epoch's updates"):
        train(_cfg(data, tmp_path))
    state = torch.load(tmp_path / STATE, weights_only=True)
    assert int(state["epoch"]) == 0 and {"G", "D", "opt_G", "opt_D", "rng"} <= state.keys()
    assert (tmp_path / GENERATOR).exists()


def test_resume_of_a_finished_run_changes_nothing(data: Path, tmp_path: Path, reference) -> None:
    cfg = _cfg(data, tmp_path, "palette")
    train(cfg)
    train(replace(cfg, resume=True))
    _assert_same(_weights(tmp_path), reference["palette"])


def test_resume_rejects_a_different_architecture(data: Path, tmp_path: Path) -> None:
    train(_cfg(data, tmp_path, "palette", epochs=1, epochs_decay=0))
    with pytest.raises(ResumeError, match="ngf"):
        Trainer(_cfg(data, tmp_path, "palette", ngf=8, resume=True))
    (tmp_path / STATE).write_bytes(b"garbage")
    with pytest.raises(ResumeError, match="cannot resume"):
        Trainer(_cfg(data, tmp_path, "palette", resume=True))


def test_checkpoint_records_the_recipe(data: Path, tmp_path: Path) -> None:
    train(_cfg(data, tmp_path, "palette", epochs=1, epochs_decay=0, direction="BtoA", load_size=256))
    model = load_model(tmp_path / GENERATOR)
    assert model.spec.direction == "BtoA" and model.spec.head == "palette"
    assert model.spec.ground_resolution_m == pytest.approx(1.0)  # 256 px stored at 1 m, loaded at 256 px
    assert len(model.spec.palette) == 4
    training = json.loads(model.spec.training)
    assert training["epochs"] == 1 and training["config"]["ngf"] == 4


def test_init_from_starts_at_those_weights_and_checks_the_architecture(data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(_cfg(data, first, "palette", epochs=1, epochs_decay=0, load_size=256))
    export_checkpoint(
        first / GENERATOR,
        first / "decoded.safetensors",
        palette_sharpness=4.0,
        palette_keep_class=True,
        class_bias={"road": 0.25},
        palette_bias_decides=True,
    )
    start = load_model(first / "decoded.safetensors")
    tuned = Trainer(
        _cfg(data, tmp_path / "tuned", "palette", init_from=str(start.path), load_size=256, load_size_max=400)
    )
    for key, value in start.net.state_dict().items():
        torch.testing.assert_close(tuned.state.G.state_dict()[key], value)
    assert tuned.spec.palette == start.spec.palette  # the classes keep their meaning
    assert (tuned.spec.palette_sharpness, tuned.spec.palette_keep_class) == (4.0, True)  # and their decoding,
    assert tuned.spec.palette_bias == start.spec.palette_bias and any(start.spec.palette_bias)  # offsets too
    assert tuned.spec.palette_bias_decides
    assert tuned.spec.ground_resolution_m == pytest.approx(256 / (256 * 400) ** 0.5)  # geometric middle
    with pytest.raises(GeopixError, match="ngf"):
        Trainer(_cfg(data, tmp_path / "bad", "palette", ngf=8, init_from=str(first / GENERATOR)))


def test_too_few_images_for_a_batch(data: Path, tmp_path: Path) -> None:
    with pytest.raises(GeopixError, match="no full batch"):
        train(_cfg(data, tmp_path, batch_size=8))


# ---- DDP ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, record: Path) -> None:
    """One rank of a gloo run; writes ``record/rankN.pt``: the photos it trained on (by hash) and its
    final G and D parameters, which DDP's gradient all-reduce keeps identical across ranks."""
    os.environ |= {
        "WORLD_SIZE": str(world),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    torch.set_num_threads(1)
    seen: list[str] = []
    params: dict[str, torch.Tensor] = {}
    step, fit = Trainer.step, Trainer.fit

    def recording_step(self: Trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        seen.extend(hashlib.sha1(a.numpy().tobytes()).hexdigest() for a in batch["a"])
        return step(self, batch)

    def fit_and_keep(self: Trainer) -> Path:
        out = fit(self)
        st = self.state
        nets = {"G": st.G, "D": st.D} if st.D is not None else {"G": st.G}
        params.update({f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.named_parameters()})
        return out

    Trainer.step, Trainer.fit = recording_step, fit_and_keep  # this spawned process only
    train(cfg)
    torch.save({"seen": seen, "params": params}, record / f"rank{rank}.pt")


@pytest.mark.parametrize("preset", ["palette", "pix2pix"])
def test_ddp_on_cpu_with_gloo(data: Path, tmp_path: Path, preset: str) -> None:
    import torch.multiprocessing as mp

    cfg = _cfg(data, tmp_path / "run", preset, batch_size=1, epochs=1, epochs_decay=0)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, tmp_path), nprocs=2, join=True)
    run = tmp_path / "run"
    model = load_model(run / GENERATOR)
    assert model.spec.ngf == 4
    rows = (run / LOG).read_text().splitlines()
    assert len(rows) == 2  # header + one epoch, written once (rank 0)
    state = torch.load(run / STATE, weights_only=True)
    assert int(state["epoch"]) == 1
    assert not any(k.startswith("module.") for k in state["G"])  # the bare network, loadable alone
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # each rank trains on its own half of the 4 pairs (DistributedSampler), none twice
    assert len(r0["seen"]) == len(r1["seen"]) == 2 and not set(r0["seen"]) & set(r1["seen"])
    # ...yet the ranks end with the same weights: their gradients were averaged every step (DDP)
    assert r0["params"].keys() == r1["params"].keys()
    assert any(k.startswith("D.") for k in r0["params"]) == cfg.use_gan  # D too, where the preset has one
    for k, v in r0["params"].items():
        assert torch.allclose(v, r1["params"][k], atol=1e-6), f"{k} differs between ranks: gradients not shared"
    assert all(torch.equal(v, state[k.split(".", 1)[0]][k.split(".", 1)[1]]) for k, v in r0["params"].items())


def test_bn_recalibration_matches_the_current_weights(data: Path, tmp_path: Path) -> None:
    """Running statistics are recomputed from the weights as they are, not left stale."""
    trainer = Trainer(_cfg(data, tmp_path, "palette", batch_size=2, bn_recal_batches=2))
    bns = [m for m in trainer.state.G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:  # stale statistics, as after weights moved fast
        m.running_mean.fill_(5.0)
        m.running_var.fill_(100.0)
    trainer.recalibrate_bn()
    first = bns[0]
    assert first.momentum == 0.1 and float(first.running_var.mean()) < 50
    # the first norm follows the first convolution: its running mean is the batch mean over
    # the calibration images (a cumulative average of two batches of two)
    x = torch.stack([trainer.dataset[i]["a"] for i in range(4)])
    conv = trainer.state.G.model.model[1].model[1]
    with torch.no_grad():
        y = conv(torch.nn.functional.leaky_relu(trainer.state.G.model.model[0](x), 0.2))
    torch.testing.assert_close(first.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_partial_label_loss_gives_unknown_pixels_exactly_zero_gradient() -> None:
    import torch.nn.functional as F

    from geopix.train_step import partial_label_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    label = torch.randint(0, 4, (2, 8, 8))
    allowed = F.one_hot(label, 4).permute(0, 3, 1, 2).bool()
    allowed[:, :, :3] = False  # unknown rows
    allowed[:, :, 3, :2] = True  # "could be anything": no information either
    allowed[:, 1:3, 5] = True  # "one of these": a set
    loss = partial_label_loss(logits, allowed)
    loss.backward()
    grad = logits.grad
    assert torch.equal(grad[:, :, :3], torch.zeros_like(grad[:, :, :3]))
    assert torch.equal(grad[:, :, 3, :2], torch.zeros_like(grad[:, :, 3, :2]))
    assert (grad[:, :, 6:].abs().sum(1) > 0).all()
    # Changing what unknown pixels "are" changes nothing, to the bit.
    logits2 = logits.detach().clone()
    logits2[:, :, :3] = torch.randn(2, 4, 3, 8) * 100
    assert torch.equal(partial_label_loss(logits2, allowed), loss.detach())
    # One allowed colour per pixel is plain cross-entropy.
    onehot = F.one_hot(label, 4).permute(0, 3, 1, 2).bool()
    assert torch.allclose(partial_label_loss(logits, onehot), F.cross_entropy(logits, label), atol=1e-6)


def test_fine_tune_on_vector_pairs_with_replay(data: Path, tmp_path: Path) -> None:
    """Vector-made pairs (A, B, M) + maps replay, from a palette checkpoint: trains and keeps its resolution."""
    import numpy as np
    from PIL import Image

    from geopix.data.pairs import MixedDataset

    init = tmp_path / "init"
    train(_cfg(data, init, "palette", epochs=1, epochs_decay=0))
    vec = tmp_path / "vec"
    for d in ("A", "B", "M"):
        (vec / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(vec / "A" / f"{i}.png")
        Image.fromarray(np.full((256, 256, 3), 232, np.uint8)).save(vec / "B" / f"{i}.png")
        m = np.zeros((256, 256), np.uint8)
        m[64:] = 0b1110111  # not a building
        Image.fromarray(m).save(vec / "M" / f"{i}.png")
    (vec / "dataset.json").write_text(json.dumps({"resolution_m": 1.25}))
    run = tmp_path / "ft"
    cfg = _cfg(
        vec, run, "palette", init_from=str(init / GENERATOR), replay=data, replay_ratio=0.5, epochs=1, epochs_decay=0
    )
    trainer = Trainer(cfg)
    assert isinstance(trainer.dataset, MixedDataset) and len(trainer.dataset) == 6
    item = trainer.dataset[0]
    assert item["allowed"].shape == (4, 256, 256)
    assert int((~item["allowed"].any(0)).sum()) == 64 * 256  # the unknown strip (flipped or rotated)
    assert trainer.dataset[5]["allowed"].sum(0).eq(1).all()  # replayed maps: one-hot
    path = trainer.fit()
    spec = load_model(path).spec
    assert spec.ground_resolution_m == 1.25
    assert spec.palette == load_model(init / GENERATOR).spec.palette


def _place(root: Path, name: str, n: int, resolution: float = 1.25, seed: int = 0) -> Path:
    """A pairs folder as ``geopix dataset vectors/labels`` writes it: A, B, M and dataset.json."""
    import numpy as np
    from PIL import Image

    place = root / name
    for d in ("A", "B", "M"):
        (place / d).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(place / "A" / f"{name}{i}.png")
        Image.fromarray(np.full((256, 256, 3), 232, np.uint8)).save(place / "B" / f"{name}{i}.png")
        Image.fromarray(np.full((256, 256), 0b1110111, np.uint8)).save(place / "M" / f"{name}{i}.png")
    (place / "dataset.json").write_text(json.dumps({"resolution_m": resolution}))
    return place


def test_places_are_drawn_equally_often_whatever_their_size(data: Path, tmp_path: Path) -> None:
    from geopix.data.pairs import MixedDataset, PlacesDataset

    init = tmp_path / "init"
    train(_cfg(data, init, "palette", epochs=1, epochs_decay=0))
    places = tmp_path / "places"
    _place(places, "big", 9)
    _place(places, "small", 1, seed=1)
    cfg = _cfg(
        places,
        tmp_path / "run",
        "palette",
        init_from=str(init / GENERATOR),
        replay=data,
        replay_ratio=0.5,
        place_samples=3,
        epochs=1,
        epochs_decay=1,
    )
    trainer = Trainer(cfg)
    assert isinstance(trainer.dataset, MixedDataset) and isinstance(trainer.dataset.main, PlacesDataset)
    main = trainer.dataset.main
    assert len(main) == 6 and len(trainer.dataset) == 12  # 3 per place, and as many replayed
    for epoch in (0, 1):
        main.set_epoch(epoch)
        assert sorted(p for p, _ in main._index) == [0, 0, 0, 1, 1, 1]
        assert len({j for p, j in main._index if p == 0}) == 3  # without replacement where it can
    main.set_epoch(1)
    again = list(main._index)
    main.set_epoch(0)
    main.set_epoch(1)
    assert main._index == again  # a pure function of (seed, epoch): resume draws the same samples
    assert {trainer.dataset[i]["index"].item() for i in range(3, 6)} == {0}  # the small place's one pair
    spec = load_model(trainer.fit()).spec
    assert spec.ground_resolution_m == 1.25


def test_places_cut_at_different_resolutions_are_refused(tmp_path: Path) -> None:
    from geopix.errors import DatasetError

    places = tmp_path / "places"
    _place(places, "a", 2, resolution=1.0)
    _place(places, "b", 2, resolution=0.5)
    with pytest.raises(DatasetError, match=r"different resolutions \(a 1.0 m, b 0.5 m\)"):
        Trainer(_cfg(places, tmp_path / "run", "palette"))
