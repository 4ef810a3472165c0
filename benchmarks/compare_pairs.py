"""Pictures for the model card: aerial | labels | each model's map, on a place's labelled pairs.

    python benchmarks/compare_pairs.py runs/places/eval/zanzibar docs/img/places_zanzibar.jpg \
        --model sat2map --model runs/places/runs/without-zanzibar/avg50.safetensors [--pairs 2]

Picks the pairs with the most labelled pixels (deterministic), one row each; unknown label pixels
are grey.  Prints the file written; nothing asserts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from geopix import style
from geopix.data.pairs import find_pairs, read_mask, read_pair
from geopix.infer import Predictor
from geopix.models.registry import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path, help="a pairs folder made by geopix dataset vectors/labels")
    ap.add_argument("out", type=Path, help="the picture (.jpg or .png)")
    ap.add_argument("--model", action="append", required=True, help="a registry name or checkpoint (repeat)")
    ap.add_argument("--pairs", dest="n", type=int, default=2, help="rows: the pairs with most labelled pixels")
    args = ap.parse_args()
    refs = find_pairs(args.pairs)
    known = [int((read_mask(r) != 0).sum()) for r in refs]
    picked = [refs[i] for i in np.argsort(known, kind="stable")[::-1][: args.n]]
    aerials = np.stack([read_pair(r)[0] for r in picked])
    columns = [aerials]
    truth = []
    for ref in picked:
        _, b = read_pair(ref)
        b = b.copy()
        b[read_mask(ref) == 0] = (128, 128, 128)
        truth.append(b)
    columns.append(np.stack(truth))
    for name in args.model:
        predictor = Predictor.from_loaded(load_model(name), device="cpu")
        columns.append(style.paint(style.classify(predictor.predict_batch(aerials))))
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(len(picked))]
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, quality=88)
    print(f"{args.out}: rows {', '.join(r.name for r in picked)}; columns aerial, labels, {', '.join(args.model)}")


if __name__ == "__main__":
    main()
