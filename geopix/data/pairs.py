"""Paired aerial/map training data: the Berkeley maps layout and folders of A and B images.

Augmentation is a pure function of ``(seed, epoch, index)``, so a sample is the same
whatever the DataLoader worker count, the process rank, or whether the run was resumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from geopix.errors import DatasetError
from geopix.read import to_unit
from geopix.style import class_to_palette_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
#: The Berkeley maps images: A|B side by side, 600×600 px halves at 0.90 m/px (New York's street
#: spacing, ``benchmarks/measure_ground_resolution.py``; Google zoom 17 at 40.7° N is 0.905).
MAPS_RESOLUTION_M = 0.9
MAPS_HALF_PX = 600
#: Any other layout: a guess, stated in the docs; pass ``--source-resolution`` for your data.
OTHER_RESOLUTION_M = 1.0


@dataclass(frozen=True, slots=True)
class PairRef:
    """Where one training pair lives: a side-by-side A|B file, or two files."""

    a: Path
    b: Path | None = None  # None: ``a`` holds A|B side by side
    m: Path | None = None  # allowed-class bit mask (vector-made pairs, see geopix.data.rasterize)

    @property
    def name(self) -> str:
        return self.a.stem


def _images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: (len(p.stem), p.stem) if p.stem.isdigit() else (0, p.stem),
    )


def find_pairs(root: str | Path, split: str = "train") -> list[PairRef]:
    """Find pairs under ``root``: ``root/split/*.jpg`` (A|B side by side), ``root/split/{A,B}/``,
    ``root/{A,B}/split/`` or ``root/{A,B}/``; ``root`` may also be the split folder itself."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist; pass the folder holding train/ and val/")
    candidates = [root / split, root]
    # Most specific first: root/A/split must win over root/A itself, which then holds folders.
    for a_dir, b_dir in (
        (root / split / "A", root / split / "B"),
        (root / "A" / split, root / "B" / split),
        (root / "A", root / "B"),
    ):
        if a_dir.is_dir() and b_dir.is_dir():
            return _folder_pairs(a_dir, b_dir)
    for base in candidates:
        if base.is_dir():
            files = _images(base)
            if files:
                return [PairRef(p) for p in files]
    raise DatasetError(
        f"no images found for split {split!r} under {root}; expected {root}/{split}/*.jpg (A|B side by side) "
        f"or {root}/{split}/A and {root}/{split}/B"
    )


def _folder_pairs(a_dir: Path, b_dir: Path) -> list[PairRef]:
    b_by_stem = {p.stem: p for p in _images(b_dir)}
    m_dir = b_dir.with_name("M")  # known masks of vector-made pairs, beside B
    m_by_stem = {p.stem: p for p in _images(m_dir)} if m_dir.is_dir() else {}
    pairs = [PairRef(a, b_by_stem[a.stem], m_by_stem.get(a.stem)) for a in _images(a_dir) if a.stem in b_by_stem]
    if not pairs:
        raise DatasetError(f"no file names in {a_dir} match any in {b_dir}; A and B images must share stems")
    return pairs


def default_source_resolution(ref: PairRef) -> float:
    """Metres per pixel of a dataset whose resolution was not given: the maps layout's known
    0.9 m/px for side-by-side 1200×600 images, else 1.0."""
    if ref.b is None:
        try:
            with Image.open(ref.a) as im:
                size = im.size
        except (OSError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"cannot read training image {ref.a}: {exc}") from exc
        if size == (2 * MAPS_HALF_PX, MAPS_HALF_PX):
            return MAPS_RESOLUTION_M
    return OTHER_RESOLUTION_M


def read_image(path: Path) -> np.ndarray:
    """One training image as HxWx3 uint8; a file PIL cannot (or will not) decode is a ``DatasetError``."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as exc:  # a bomb: more pixels than PIL decodes safely
        raise DatasetError(f"cannot read training image {path}: {exc}") from exc


def read_pair(ref: PairRef, direction: str = "AtoB") -> tuple[np.ndarray, np.ndarray]:
    """Return (input, target) as HxWx3 uint8, swapped for ``BtoA``."""
    a = read_image(ref.a)
    if ref.b is None:
        w = a.shape[1] // 2
        a, b = a[:, :w], a[:, w : 2 * w]
    else:
        b = read_image(ref.b)
    if a.shape != b.shape:
        raise DatasetError(f"pair {ref.name}: A is {a.shape[:2]} but B is {b.shape[:2]}; they must match")
    return (a, b) if direction == "AtoB" else (b, a)


def read_mask(ref: PairRef) -> np.ndarray | None:
    """The pair's allowed-class bit mask (H, W) uint8, or None for a fully labelled pair."""
    if ref.m is None:
        return None
    with Image.open(ref.m) as im:
        return np.asarray(im.convert("L"))


def resize_square(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST if nearest else Image.BICUBIC))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → 3xHxW float in [-1, 1] (the authors' normalisation, ``read.to_unit``'s rule)."""
    return torch.from_numpy(to_unit(np.moveaxis(np.asarray(img), -1, 0)))


def nearest_palette(img: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """3xHxW float in 0..255 → HxW int64 index of the nearest palette colour."""
    flat = img.reshape(3, -1).T  # P,3
    d = torch.cdist(flat, palette)  # P,K
    return d.argmin(1).reshape(img.shape[1:])


def jitter_colours(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast, saturation and per-band gain on an HxWx3 uint8 photo.

    Other cameras, seasons and sun angles differ from the training imagery mostly in these;
    jittering them makes the model read structure rather than one city's colours.
    """
    x = img.astype(np.float32)
    mean = x.mean()
    grey = x.mean(-1, keepdims=True)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    gain = rng.uniform(1 - strength / 3, 1 + strength / 3, size=3).astype(np.float32)
    x = grey + (x - grey) * saturation
    x = mean + (x - mean) * contrast
    x = x * brightness * gain
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def jitter_sharpness(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Randomly sharpen (unsharp mask) or soften (Gaussian blur) an HxWx3 uint8 photo.

    Modern 0.1–0.5 m orthophotos, downsampled to the model's resolution, are much crisper
    than the maps dataset's 2013 Google imagery; a model that only ever saw the soft
    imagery takes crisp tree canopy for something else (Vienna's gardens came out as
    background, and softening the photo by hand turned them green).  ``strength`` s draws
    u ~ U(-s, s): u > 0 sharpens by 300·u % (radius 1.5 px), u < 0 blurs with radius 1.5·|u| px.
    """
    from PIL import ImageFilter

    u = float(rng.uniform(-strength, strength))
    im = Image.fromarray(np.ascontiguousarray(img))
    if u > 0:
        im = im.filter(ImageFilter.UnsharpMask(radius=1.5, percent=round(300 * u), threshold=0))
    elif u < 0:
        im = im.filter(ImageFilter.GaussianBlur(radius=1.5 * -u))
    return np.asarray(im)


class MixedDataset(Dataset):
    """``main`` plus ``replay`` samples making up ``ratio`` of every epoch, drawn per (seed, epoch).

    Fine-tuning on a region's few vector-made pairs while replaying the maps dataset keeps what
    the model knows of New York (and the classes a region's labels do not cover).
    """

    def __init__(self, main: PairDataset | PlacesDataset, replay: PairDataset, ratio: float, seed: int = 0) -> None:
        if not 0.0 <= ratio < 1.0:
            raise DatasetError(f"--replay-ratio {ratio} must be in [0, 1)")
        self.main, self.replay, self.seed = main, replay, seed
        self.n_replay = round(len(main) * ratio / (1.0 - ratio))
        self.pairs = list(main.pairs)  # samples grids and BN recalibration read the main pairs first
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.main.set_epoch(epoch)
        self.replay.set_epoch(epoch)
        rng = np.random.default_rng(sample_seed(self.seed, epoch, -1))
        self._pick = rng.choice(len(self.replay), size=self.n_replay, replace=self.n_replay > len(self.replay))

    def __len__(self) -> int:
        return len(self.main) + self.n_replay

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < len(self.main):
            return self.main[index]
        return self.replay[int(self._pick[index - len(self.main)])]


def find_places(root: str | Path) -> dict[str, list[PairRef]] | None:
    """A folder of *places*: sub-folders (or links) that each hold pairs made by ``geopix dataset``
    (``A/``, ``B/``, ``M/`` and ``dataset.json``), trained on with each place drawn equally often.

    None when ``root`` is an ordinary dataset folder."""
    root = Path(root)
    if not root.is_dir() or (root / "A").is_dir() or (root / "train").is_dir():
        return None
    places = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and (d / "dataset.json").is_file()}
    if not places:
        return None
    return {name: find_pairs(d, "train") for name, d in places.items()}


class PlacesDataset(Dataset):
    """Every place in equal share: each epoch draws ``len(self) / places`` samples from each place.

    Big sets (Massachusetts' 100 tiles) would otherwise drown small ones (New Brunswick's 2).
    Draws are a pure function of ``(seed, epoch)``, without replacement while a place has enough
    pairs, so a resumed run sees the same samples.
    """

    def __init__(self, places: Sequence[PairDataset], seed: int = 0, per_place: int | None = None) -> None:
        if not places:
            raise DatasetError("no places to train on")
        self.places, self.seed = list(places), seed
        total = sum(len(p) for p in self.places)
        self.per_place = per_place or max(1, round(total / len(self.places)))
        self.pairs = [ref for p in self.places for ref in p.pairs]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng(sample_seed(self.seed, epoch, -2))
        self._index: list[tuple[int, int]] = []
        for i, place in enumerate(self.places):
            place.set_epoch(epoch)
            n = len(place)
            pick = rng.choice(n, size=self.per_place, replace=self.per_place > n)
            self._index += [(i, int(j)) for j in pick]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        place, j = self._index[index]
        return self.places[place][j]


class PairDataset(Dataset):
    """Resize to ``load_size``, random ``crop_size`` crop, shared flips/rotations.

    ``rotate`` adds the 90° rotations: top-down imagery and maps have no "up", so the
    eight dihedral transforms are all valid samples.  ``load_size_max`` draws each sample's
    scale log-uniformly between ``load_size`` and it (real imagery never matches one ground
    resolution exactly); ``colour_jitter`` perturbs the input photo's colours (see
    :func:`jitter_colours`) and ``sharpness_jitter`` its sharpness (:func:`jitter_sharpness`).
    The target map is never jittered.  Pairs with a known mask (``PairRef.m``, vector-made)
    add ``allowed`` to each item: the palette colours each pixel may be (``partial=True`` adds
    it, one-hot, to fully labelled pairs too, so both kinds share a batch).
    """

    def __init__(
        self,
        pairs: Sequence[PairRef],
        *,
        direction: str = "AtoB",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        rotate: bool = False,
        train: bool = True,
        palette: Sequence[Sequence[int]] | None = None,
        seed: int = 0,
        cache: bool = True,
        load_size_max: int | None = None,
        colour_jitter: float = 0.0,
        sharpness_jitter: float = 0.0,
        partial: bool | None = None,
    ) -> None:
        if crop_size > load_size:
            raise DatasetError(f"crop size {crop_size} is larger than load size {load_size}")
        if load_size_max is not None and load_size_max < load_size:
            raise DatasetError(f"--load-size-max {load_size_max} is smaller than --load-size {load_size}")
        if not 0.0 <= colour_jitter < 1.0:
            raise DatasetError(f"--colour-jitter {colour_jitter} must be in [0, 1)")
        if not 0.0 <= sharpness_jitter <= 1.0:
            raise DatasetError(f"--sharpness-jitter {sharpness_jitter} must be in [0, 1]")
        self.load_size_max = load_size_max if train else None
        self.colour_jitter = colour_jitter if train else 0.0
        self.sharpness_jitter = sharpness_jitter if train else 0.0
        self.pairs = list(pairs)
        self.direction = direction
        self.load_size = load_size
        self.crop_size = crop_size
        self.flip = flip
        self.rotate = rotate
        self.train = train
        self.palette = torch.tensor(palette, dtype=torch.float32) if palette else None
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        # Partial labels (vector-made pairs): every item carries the palette colours each pixel may be.
        # None: when some pair has a mask; True for a replay set mixed with vector-made pairs.
        has_masks = any(p.m is not None for p in self.pairs) if partial is None else partial
        self.partial = self.palette is not None and has_masks
        if self.partial:
            self._class_bits = torch.from_numpy(
                np.array([sum(1 << c for c in np.flatnonzero(col)) for col in class_to_palette_mask(palette).T])
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def loaded(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The pair (and mask) at ``load_size`` — or as stored, when each sample picks its own scale."""
        if index in self._cache:
            return self._cache[index]
        a, b = read_pair(self.pairs[index], self.direction)
        m = read_mask(self.pairs[index])
        if self.load_size_max:
            out = (a, b, m)
        else:
            size = self.load_size
            m = None if m is None else resize_square(m, size, nearest=True)
            out = (resize_square(a, size), resize_square(b, size), m)
        if self.cache:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a, b, m = self.loaded(index)
        if self.train:
            rng = np.random.default_rng(sample_seed(self.seed, self.epoch, index))
            if self.load_size_max:
                # Crop the stored image at the size that becomes crop_size at this sample's
                # scale, then resize only the crop: the same result as resizing the whole
                # image first, for a fraction of the work.
                lo, hi = np.log(self.load_size), np.log(self.load_size_max)
                scale = float(np.exp(rng.uniform(lo, hi))) / a.shape[1]
                side = min(a.shape[0], a.shape[1], round(self.crop_size / scale))
                top, left = (int(rng.integers(0, n - side + 1)) for n in a.shape[:2])
                sl = (slice(top, top + side), slice(left, left + side))
                a, b = resize_square(a[sl], self.crop_size), resize_square(b[sl], self.crop_size)
                m = None if m is None else resize_square(m[sl], self.crop_size, nearest=True)
            else:
                top, left = rng.integers(0, self.load_size - self.crop_size + 1, size=2)
                sl = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
                a, b = a[sl], b[sl]
                m = None if m is None else m[sl]
            do_flip = self.flip and rng.random() < 0.5
            k = int(rng.integers(0, 4)) if self.rotate else 0
            if self.colour_jitter:
                a = jitter_colours(a, rng, self.colour_jitter)
            if self.sharpness_jitter:  # drawn after the others: old recipes keep their samples
                a = jitter_sharpness(a, rng, self.sharpness_jitter)
        else:
            top = left = (self.load_size - self.crop_size) // 2
            do_flip, k = False, 0
            sl = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
            a, b = a[sl], b[sl]
            m = None if m is None else m[sl]
        if do_flip:
            a, b = a[:, ::-1], b[:, ::-1]
            m = None if m is None else m[:, ::-1]
        if k:
            a, b = np.rot90(a, k), np.rot90(b, k)
            m = None if m is None else np.rot90(m, k)
        item = {"a": to_tensor(a), "b": to_tensor(b), "index": torch.tensor(index)}
        if self.palette is not None:
            item["label"] = nearest_palette((item["b"] + 1.0) * 127.5, self.palette)
        if self.partial:
            item["allowed"] = self._allowed(item["label"], m)
        return item

    def _allowed(self, label: torch.Tensor, m: np.ndarray | None) -> torch.Tensor:
        """(K, H, W) bool: the palette colours each pixel may be (one-hot for fully labelled pairs)."""
        k = len(self.palette)
        if m is None:
            return torch.nn.functional.one_hot(label, k).permute(2, 0, 1).bool()
        bits = torch.from_numpy(np.array(m, dtype=np.int64))
        return (bits[None] & self._class_bits.view(k, 1, 1)) != 0


def fit_palette(
    pairs: Sequence[PairRef], k: int, *, direction: str = "AtoB", seed: int = 0, max_images: int = 200, iters: int = 30
) -> list[tuple[int, int, int]]:
    """k-means (k-means++ start) over target pixels: the few flat colours a map is drawn in."""
    rng = np.random.default_rng(seed)
    step = max(1, len(pairs) // max_images)
    pix = []
    for ref in list(pairs)[::step]:
        _, b = read_pair(ref, direction)
        flat = b.reshape(-1, 3)
        pix.append(flat[rng.choice(len(flat), size=min(len(flat), 2000), replace=False)])
    x = np.concatenate(pix).astype(np.float64)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.array(centres)
    for _ in range(iters):
        lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if np.any(lab == j):
                c[j] = x[lab == j].mean(0)
    # Most common colour first: a stable, human-readable order.
    lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    order = np.argsort(-np.bincount(lab, minlength=k), kind="stable")
    return [tuple(int(v) for v in np.clip(np.round(c[j]), 0, 255)) for j in order]


def input_statistics(
    pairs: Sequence[PairRef], direction: str = "AtoB", max_images: int = 200
) -> tuple[tuple[float, float], ...]:
    """Per-band (mean, std) of the *input* images on 0..255, stored in checkpoints so render
    can match other imagery's colours to what the model was trained on."""
    step = max(1, len(pairs) // max_images)
    pix = [read_pair(ref, direction)[0].reshape(-1, 3)[::7] for ref in list(pairs)[::step]]
    x = np.concatenate(pix).astype(np.float64)
    return tuple((round(float(m), 3), round(float(s), 3)) for m, s in zip(x.mean(0), x.std(0), strict=True))
