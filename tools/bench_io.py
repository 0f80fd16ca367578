"""Input-pipeline benchmark: training-iterator images/s at 224 per decode thread, next to a plain OpenCV loop that
only decodes and resizes the same records (the practical limit of this CPU).

    python tools/bench_io.py                  # 1 and 2 decode threads
    python tools/bench_io.py --threads 1 2 4 --fork

The records are the colour photographs shipped with scikit-image and scikit-learn, re-saved as JPEG with
ImageNet's typical short side (--short-side) and packed with tools/make_rec.py (pass-through, like ImageNet
training records), repeated to --records records.
"""
import argparse
import pathlib
import tempfile
import time

import mxnet as mx
import numpy as np

from tools.make_rec import list_class_folders, pack_split
from dpn_mxnet.sample_photos import NAMES, sample_photo
from dpn_mxnet import cli, data


def pack_photos(folder, records, short_side):
    """A training .rec of ``records`` JPEG photographs (short side ``short_side``) in one class folder."""
    from PIL import Image
    images = folder / "images" / "photos"
    images.mkdir(parents=True)
    for number in range(records):
        with Image.open(sample_photo(NAMES[number % len(NAMES)])) as photo:
            photo = photo.convert("RGB")
            scale = short_side / min(photo.size)
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
            photo.save(images / ("%04d.JPEG" % number), "JPEG", quality=90)
    items = list_class_folders(folder / "images", ["photos"])
    return pack_split("train", folder / "images", items, folder, 1, threads=2, shuffle_seed=0)


def encoded_images(rec):
    reader = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    return [mx.recordio.unpack(reader.read_idx(key))[1] for key in reader.keys]


def opencv_rate(rec, size, rounds):
    """Images/s of one thread decoding (cv2.imdecode) and resizing (bicubic, size x size) the records."""
    import cv2
    cv2.setNumThreads(1)
    encoded = encoded_images(rec)
    start = time.perf_counter()
    for _ in range(rounds):
        for buffer in encoded:
            image = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)
            cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    return rounds * len(encoded) / (time.perf_counter() - start)


def mxnet_opencv_rate(rec, size, rounds):
    """The same loop with the OpenCV and libjpeg built into libmxnet (mx.image), which ImageRecordIter uses."""
    encoded = encoded_images(rec)
    start = time.perf_counter()
    for _ in range(rounds):
        for buffer in encoded:
            mx.image.imresize(mx.image.imdecode(buffer, to_rgb=False), size, size, interp=2).wait_to_read()
    return rounds * len(encoded) / (time.perf_counter() - start)


def iterator_rate(rec, size, threads, batch, batches, aug, hsl):
    """Images/s of data.train_iter (the authors' augmentation) after one warm-up batch."""
    batches_iter = data.train_iter(rec, batch, size, batches_per_epoch=batches + 1, threads=threads, aug=aug,
                                   hsl=hsl)
    batches_iter.next().data[0].wait_to_read()
    start = time.perf_counter()
    for _ in range(batches):
        batches_iter.next().data[0].wait_to_read()
    return batches * batch / (time.perf_counter() - start)


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decode threads to time (default: 1 2)")
    parser.add_argument("--size", type=int, default=224, help="crop size (default: %(default)s)")
    parser.add_argument("--records", type=int, default=200, help="records in the benchmark .rec (default: %(default)s)")
    parser.add_argument("--short-side", type=int, default=375, help="photo short side (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run (default: %(default)s)")
    parser.add_argument("--fork", action="store_true", help="also time aug='fork' (the authors' geometry)")
    parser.add_argument("--hsl", type=int, nargs=3, default=data.HSL, metavar=("H", "S", "L"),
                        help="HSL jitter bounds; 0 0 0 times the pipeline without it (default: 20 40 50)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements of each figure, interleaved; the best is printed (default: %(default)s)")
    args = parser.parse_args(argv)
    rounds = max(1, args.batches * args.batch // args.records)
    with tempfile.TemporaryDirectory() as tmp:
        rec = pack_photos(pathlib.Path(tmp), args.records, args.short_side)
        runs = {"limit": lambda: opencv_rate(rec, args.size, rounds),
                "mxnet": lambda: mxnet_opencv_rate(rec, args.size, rounds)}
        for aug in ("stock", "fork") if args.fork else ("stock",):
            for threads in args.threads:
                runs[aug, threads] = (lambda aug=aug, threads=threads:
                                      iterator_rate(rec, args.size, threads, args.batch, args.batches, aug,
                                                    args.hsl))
        best = {}
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits every figure alike
            for name, run in runs.items():
                best[name] = max(best.get(name, 0), run())
    limit = best.pop("limit")
    print("limit: OpenCV (opencv-python) decode + bicubic resize to %d, 1 thread: %.1f img/s" % (args.size, limit))
    print("       the same with libmxnet's built-in OpenCV/libjpeg (mx.image): %.1f img/s" % best.pop("mxnet"))
    for (aug, threads), rate in best.items():
        used = min(threads, data.record_iter_threads()) if aug == "stock" else threads
        print("train_iter aug=%s, %d decode thread(s)%s: %.1f img/s = %.1f img/s per thread = %.0f %% of the limit"
              % (aug, threads, " (ImageRecordIter uses %d)" % used if used != threads else "", rate, rate / used,
                 100 * rate / used / limit))

if __name__ == "__main__":
    main()
