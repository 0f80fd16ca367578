"""Write scikit-learn's 1,797 handwritten digit scans as image folders and pack them into train/val RecordIO.

    python tools/make_digits.py data/digits                # all 1,797 digits, 32x32
    python tools/make_digits.py /tmp/digits --limit 300    # a class-balanced subset

The scans (``sklearn.datasets.load_digits``: 8x8, 17 grey levels) are drawn as dark ink on white, upscaled
bilinearly to --size pixels and saved as greyscale PNG under OUT/images/{train,val}/<digit>/. The split is
deterministic and stratified: within each digit, every 5th scan (in the data set's order) goes to val (~80/20).
--limit keeps the first N scans in class-balanced order. Packing uses tools/make_rec.py with the class index
derived from the folder names (label = digit). A second run with the same options reuses the output.
"""
import json
import pathlib

import numpy as np

from dpn_mxnet import cli
from dpn_mxnet.checks import DataError
from dpn_mxnet.packing import make_rec

VAL_EVERY = 5


def select(labels, limit=None):
    """Indices of the scans to keep, class-balanced (rank within class first), and their rank within class."""
    ranks = np.zeros(len(labels), dtype=int)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        ranks[members] = np.arange(len(members))
    order = np.lexsort((labels, ranks))[:limit]
    return order, ranks[order]


def write_images(root, limit=None, size=32):
    """Write the digit images; returns the number written."""
    import cv2
    from sklearn.datasets import load_digits
    digits = load_digits()
    order, ranks = select(digits.target, limit)
    for index, rank in zip(order, ranks):
        split = "val" if rank % VAL_EVERY == VAL_EVERY - 1 else "train"
        ink = digits.images[index] / 16.0
        image = cv2.resize(np.uint8(np.round(255 * (1 - ink))), (size, size), interpolation=cv2.INTER_LINEAR)
        folder = pathlib.Path(root) / split / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / ("%04d.png" % index)), image)
    return len(order)


def make_digits(out, limit=None, size=32, threads=2):
    """OUT/train.rec and OUT/val.rec (with .idx, .lst, classes.txt) of the digits; reused when already built with
    the same options. Returns {"train": path, "val": path}."""
    out = pathlib.Path(out)
    stamp, options = out / "digits.json", {"limit": limit, "size": size}
    recs = {split: out / (split + ".rec") for split in ("train", "val")}
    if stamp.is_file() and json.loads(stamp.read_text()) == options:
        from dpn_mxnet.data import check_rec
        try:
            for rec in recs.values():
                check_rec(rec, 10)
            return recs
        except DataError:
            pass
    stamp.unlink(missing_ok=True)
    images = out / "images"
    if images.exists():
        import shutil
        shutil.rmtree(images)
    write_images(images, limit, size)
    recs = make_rec(images, out, classes="auto", threads=threads)
    stamp.write_text(json.dumps(options))
    return recs


def main(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("out", help="output folder")
    parser.add_argument("--limit", type=int, help="keep only this many scans (default: all 1,797)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--num-thread", type=int, default=2, help="packing processes (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 2 * VAL_EVERY * 10:
        parser.error("--limit must be at least %d (some of every digit in train and val)" % (2 * VAL_EVERY * 10))
    if args.size < 8:
        parser.error("--size must be at least 8 (the scans are 8x8)")
    try:
        recs = make_digits(args.out, args.limit, args.size, args.num_thread)
    except DataError as err:
        parser.exit(2, "error: %s\n" % err)
    for split, rec in recs.items():
        print("%s: %s" % (split, rec))


if __name__ == "__main__":
    main()
