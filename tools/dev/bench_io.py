"""Input-pipeline benchmark: training-iterator images/s at 224 per decode thread, next to a plain OpenCV loop that
only decodes and resizes the same records (the practical limit of this CPU).

    python tools/dev/bench_io.py                  # 1 and 2 decode threads
    python tools/dev/bench_io.py --threads 1 2 4 --fork --repeats 5

--fork also times aug="fork" twice: the library's pipeline (dpn_mxnet/data/pipeline.py) and the straightforward
reference implementation it equals bit for bit (tools/dev/fork_reference.py). All figures are measured in one
interleaved run; each printed figure is the median of --repeats measurements.

The records are the colour photographs shipped with scikit-image and scikit-learn, re-saved as JPEG with
ImageNet's typical short side (--short-side) and packed with tools/make_rec.py (pass-through, like ImageNet
training records), repeated to --records records.
"""
import pathlib
import platform
import statistics
import tempfile
import time

import numpy as np

from dpn_mxnet import cli, packing
from dpn_mxnet.sample_photos import NAMES, sample_photo
from tools.dev.fork_reference import ThreadedRecordIter

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
mx = cli.lazy_import("mxnet")
data, draws, spec, training = (cli.lazy_import("dpn_mxnet.data" + name)
                               for name in ("", ".draws", ".spec", ".training"))

REPO = pathlib.Path(__file__).resolve().parents[2]
NODE_RATE = 5600  # img/s: 8 GPUs at timm's DPN-68 training speed (about 700 img/s each)
LABELS = {"stock": "train_iter aug=stock", "fork": "train_iter aug=fork",
          "fork-reference": "aug=fork reference (tools/dev/fork_reference.py)"}


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
    items = packing.list_class_folders(folder / "images", ["photos"])
    return packing.pack_split("train", folder / "images", items, folder, 1, threads=2, shuffle_seed=0)


def encoded_images(rec):
    reader = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    return [mx.recordio.unpack(reader.read_idx(key))[1] for key in reader.keys]


def timed(images, work):
    """(images per second, images per CPU-second of this process) of ``work()``; on a machine shared with other
    jobs the second stays close to what an idle machine gives, the first does not."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def opencv_rate(rec, size, rounds):
    """Images/s of one thread decoding (cv2.imdecode) and resizing (bicubic, size x size) the records."""
    import cv2
    cv2.setNumThreads(1)
    encoded = encoded_images(rec)

    def loop():
        for _ in range(rounds):
            for buffer in encoded:
                image = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)
                cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    return timed(rounds * len(encoded), loop)


def mxnet_opencv_rate(rec, size, rounds):
    """The same loop with the OpenCV and libjpeg built into libmxnet (mx.image), which ImageRecordIter uses."""
    encoded = encoded_images(rec)

    def loop():
        for _ in range(rounds):
            for buffer in encoded:
                mx.image.imresize(mx.image.imdecode(buffer, to_rgb=False), size, size, interp=2).wait_to_read()
    return timed(rounds * len(encoded), loop)


def reference_fork_iter(rec, batch, size, threads, batches, hsl):
    """aug="fork" as the straightforward reference implementation (tools/dev/fork_reference.py) computes it."""
    keys = data.keys_in_file_order(rec)
    reference = ThreadedRecordIter(rec, keys, spec.Augmentation(size, hsl=hsl), batch, size, threads)
    reference.start(draws.pass_key(0, 0, 0))
    return mx.io.ResizeIter(reference, batches)


WARM_UP = 4  # batches: thread start, first calls, and the batch memory a running iterator reuses


def iterator_rate(rec, size, threads, batch, batches, aug, hsl):
    """Images/s of training.train_iter (the authors' augmentation; aug "fork-reference": the tests' reference
    implementation of aug="fork") in a steady state: after WARM_UP batches."""
    if aug == "fork-reference":
        batches_iter = reference_fork_iter(rec, batch, size, threads, batches + WARM_UP, hsl)
    else:
        batches_iter = training.train_iter(rec, batch, size, batches_per_epoch=batches + WARM_UP, threads=threads,
                                           aug=aug, hsl=hsl)
    for _ in range(WARM_UP):
        batches_iter.next().data[0].wait_to_read()

    def loop():
        for _ in range(batches):
            batches_iter.next().data[0].wait_to_read()
    return timed(batches * batch, loop)


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return "%s, %d CPUs" % (names[0] if names else platform.processor() or "unknown CPU", len(names))


def main(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decode threads to time (default: 1 2)")
    parser.add_argument("--size", type=int, default=224, help="crop size (default: %(default)s)")
    parser.add_argument("--records", type=int, default=200, help="records in the benchmark .rec (default: %(default)s)")
    parser.add_argument("--short-side", type=int, default=375, help="photo short side (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run (default: %(default)s)")
    parser.add_argument("--fork", action="store_true",
                        help="also time aug='fork' (the authors' geometry) and its reference implementation")
    parser.add_argument("--hsl", type=int, nargs=3, default=(20, 40, 50), metavar=("H", "S", "L"),
                        help="HSL jitter bounds, as train_imagenet.py's --hsl; 0 0 0 times the pipeline without it "
                             "(default: 20 40 50)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements of each figure, interleaved; the median is printed (default: %(default)s)")
    args = parser.parse_args(argv)
    rounds = max(1, args.batches * args.batch // args.records)
    with tempfile.TemporaryDirectory() as tmp:
        rec = pack_photos(pathlib.Path(tmp), args.records, args.short_side)
        runs = {"limit": lambda: opencv_rate(rec, args.size, rounds),
                "mxnet": lambda: mxnet_opencv_rate(rec, args.size, rounds)}
        for aug in ("stock", "fork-reference", "fork") if args.fork else ("stock",):
            for threads in args.threads:
                runs[aug, threads] = (lambda aug=aug, threads=threads:
                                      iterator_rate(rec, args.size, threads, args.batch, args.batches, aug,
                                                    args.hsl))
        measured = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits every figure alike
            for name, run in runs.items():
                measured[name].append(run())
    median = {name: [statistics.median(rates) for rates in zip(*pairs)] for name, pairs in measured.items()}
    limit, limit_cpu = median.pop("limit")
    print("CPU: %s; medians of %d interleaved repeats; img/s: wall clock, img/CPU-s: images per CPU-second of the "
          "process (all its threads)" % (cpu_model(), args.repeats))
    print("limit: OpenCV (opencv-python) decode + bicubic resize to %d, 1 thread: %.1f img/s, %.1f img/CPU-s"
          % (args.size, limit, limit_cpu))
    print("       the same with libmxnet's built-in OpenCV/libjpeg (mx.image): %.1f img/s, %.1f img/CPU-s"
          % tuple(median.pop("mxnet")))
    for (aug, threads), (rate, cpu_rate) in median.items():
        used = min(threads, data.record_iter_threads()) if aug == "stock" else threads
        print("%s, %d decode thread(s)%s: %.1f img/s = %.1f per thread = %.0f %% of the limit; %.1f img/CPU-s = "
              "%.0f %% of the limit's, %.1f cores for %d img/s"
              % (LABELS[aug], threads, " (ImageRecordIter uses %d)" % used if used != threads else "", rate,
                 rate / used, 100 * rate / used / limit, cpu_rate, 100 * cpu_rate / limit_cpu, NODE_RATE / cpu_rate,
                 NODE_RATE))


if __name__ == "__main__":
    main()
