"""The straightforward implementation of ``aug="fork"`` that the library's fast pipeline (dpn_mxnet/data/pipeline.py)
must equal bit for bit: each sample decoded by OpenCV, its draws (``draw``) from numpy's generator, cropped and
resized, jittered with two ``cv2.cvtColor`` calls (``dpn_mxnet.data.kernel.hsl_jitter``), flipped and normalised
plane by plane; batches stacked from per-sample results of a thread pool that reads the .rec under a lock (the
order of the samples and the padding are the library's, ``dpn_mxnet.data.pipeline.ShuffledPasses``)."""
import concurrent.futures
import math
import threading

import cv2
import mxnet as mx
import numpy as np

from dpn_mxnet.checks import DataError
from dpn_mxnet.data.kernel import hsl_jitter
from dpn_mxnet.data.pipeline import ShuffledPasses
from dpn_mxnet.data.pixels import MEAN_RGB, SCALE
from dpn_mxnet.data.records import rec_paths


def sample_rng(key, position):
    """The generator of sample ``position`` of the pass ``key`` (``dpn_mxnet.data.draws.pass_key``)."""
    return np.random.default_rng([*key, position])


def window(augmentation, rows, cols, rng):
    """(left, top, width, height) in the original image of the fork's random S x S crop
    (``dpn_mxnet.data.spec.Augmentation``)."""
    size, lo, hi = augmentation.image_size, *augmentation.aspect
    ratio = lo + (hi - lo) * (rng.random() + rng.random()) / 2
    w_ratio, h_ratio = (ratio, 1 / ratio) if rng.random() > 0.5 else (1 / ratio, ratio)
    stretched = (cols, rows)
    if lo != 1 or hi != 1:
        stretched = (math.ceil(cols * w_ratio * 1.1), math.ceil(rows * h_ratio * 1.1))
    scale = max((size + 0.4) / stretched[1], (size + 0.4) / stretched[0])
    if (augmentation.min_area, augmentation.max_area) != (1, 1):
        scale /= math.sqrt(rng.uniform(augmentation.min_area, augmentation.max_area))
    box = []
    for length, extent in zip((cols, rows), stretched):
        start = rng.integers(0, int(scale * extent) - size, endpoint=True)
        # output pixel u of the crop samples the original at ((start + u) / scale + 0.5) * length / extent - 0.5
        zoom = scale * extent / length
        crop = min(length, max(1, round(size / zoom)))
        box.append((min(length - crop, max(0, round((start + (scale - 1) / 2) / zoom))), crop))
    (left, width), (top, height) = box
    return left, top, width, height


def draw(augmentation, rows, cols, rng):
    """All random draws of one sample of a ``rows`` x ``cols`` image, in order: the crop window (left, top, width,
    height), the HSL offsets [dH, dS, dL] (None when ``hsl`` is all zero: no jitter) and the mirror."""
    box = window(augmentation, rows, cols, rng)
    hsl = augmentation.hsl
    offsets = [int((rng.random() + 4 * rng.random()) / 5 * 2 * m - m) for m in hsl] if any(hsl) else None
    return box, offsets, bool(augmentation.mirror and rng.random() < 0.5)


def fork_sample(augmentation, record, rng):
    """(float32 3 x S x S, label) of one raw record under ``augmentation``'s draws from ``rng``."""
    header, encoded = mx.recordio.unpack(record)
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("record id %d: the image cannot be decoded" % header.id)
    (left, top, width, height), offsets, mirror = draw(augmentation, *image.shape[:2], rng)
    size = augmentation.image_size
    crop = cv2.resize(image[top:top + height, left:left + width], (size, size), interpolation=cv2.INTER_CUBIC)
    if offsets is not None:
        crop = hsl_jitter(crop, offsets)
    if mirror:
        crop = cv2.flip(crop, 1)
    pixels = np.empty((3, size, size), np.float32)
    for plane, mean, out in zip(cv2.split(crop)[::-1], MEAN_RGB, pixels):  # RGB planes, (x - mean) in float32
        cv2.subtract(plane, float(mean), dst=out, dtype=cv2.CV_32F)
    pixels *= np.float32(SCALE)
    label = header.label if header.flag == 0 else header.label[0]
    return pixels, np.float32(label)


class ThreadedRecordIter(ShuffledPasses):
    """Batches of ``fork_sample`` over ``keys`` of a .rec, shuffled every pass as the library's iterator
    (``dpn_mxnet.data.pipeline.ShuffledPasses``), from per-sample futures of ``threads`` worker threads; sample
    ``position`` of pass ``key`` draws from ``sample_rng(key, position)``, made on the calling thread."""

    def __init__(self, rec, keys, augmentation, batch_size, image_size, threads):
        super().__init__(keys, batch_size, image_size)
        rec, idx = rec_paths(rec)
        self._reader, self._lock = mx.recordio.MXIndexedRecordIO(idx, rec, "r"), threading.Lock()
        self._augmentation = augmentation
        self._workers = concurrent.futures.ThreadPoolExecutor(threads)

    def _sample(self, key, rng):
        with self._lock:
            record = self._reader.read_idx(key)
        return fork_sample(self._augmentation, record, rng)

    def _queue(self, key, samples):
        futures = [self._workers.submit(self._sample, record, sample_rng(key, position))
                   for record, position in samples]
        return futures, futures

    def _finish(self, futures):
        samples = [future.result() for future in futures]
        pixels = np.stack([pixels for pixels, _ in samples])
        return mx.nd.from_numpy(pixels), mx.nd.array([label for _, label in samples])
