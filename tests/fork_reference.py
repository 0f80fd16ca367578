"""The straightforward implementation of ``aug="fork"`` that the library's fast pipeline (train/fork_pipeline.py)
must equal bit for bit: each sample decoded by OpenCV, its draws from ``data.ForkAugmenter.draw``, cropped and
resized, jittered with two ``cv2.cvtColor`` calls (``data.hsl_jitter``), flipped and normalised plane by plane;
batches stacked from per-sample futures of a thread pool that reads the .rec under a lock."""
import collections
import concurrent.futures
import threading

import cv2
import mxnet as mx
import numpy as np

from train import data


def fork_sample(augmenter, record, rng):
    """(float32 3 x S x S, label) of one raw record under ``augmenter``'s draws from ``rng``."""
    header, encoded = mx.recordio.unpack(record)
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise data.DataError("record id %d: the image cannot be decoded" % header.id)
    (left, top, width, height), offsets, mirror = augmenter.draw(*image.shape[:2], rng)
    crop = cv2.resize(image[top:top + height, left:left + width], (augmenter.size, augmenter.size),
                      interpolation=cv2.INTER_CUBIC)
    if offsets is not None:
        crop = data.hsl_jitter(crop, offsets)
    if mirror:
        crop = cv2.flip(crop, 1)
    pixels = np.empty((3, augmenter.size, augmenter.size), np.float32)
    for plane, mean, out in zip(cv2.split(crop)[::-1], data.MEAN_RGB, pixels):  # RGB planes, (x - mean) in float32
        cv2.subtract(plane, float(mean), dst=out, dtype=cv2.CV_32F)
    pixels *= np.float32(data.SCALE)
    label = header.label if header.flag == 0 else header.label[0]
    return pixels, np.float32(label)


class ThreadedRecordIter(mx.io.DataIter):
    """Batches of ``fork_sample`` over ``keys`` of a .rec, shuffled every pass, computed by ``threads`` worker
    threads one batch ahead; sample ``position`` of pass ``p`` draws from ``data.sample_rng(seed, p, position)``.
    A pass has ceil(len(keys) / batch) batches; the last one is completed from the start of the pass (``pad``)."""

    def __init__(self, rec, keys, augmenter, batch_size, image_size, threads, seed):
        super().__init__(batch_size)
        rec, idx = data.rec_paths(rec)
        self._reader, self._lock = mx.recordio.MXIndexedRecordIO(idx, rec, "r"), threading.Lock()
        self._keys, self._augmenter, self._seed, self._pass = list(keys), augmenter, seed, -1
        self._workers = concurrent.futures.ThreadPoolExecutor(threads)
        self._pending, self._order, self._queued = collections.deque(), [], 0
        self.provide_data = [mx.io.DataDesc("data", (batch_size, 3, image_size, image_size))]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batch_size,))]
        self.reset()

    def _sample(self, key, rng):
        with self._lock:
            record = self._reader.read_idx(key)
        return fork_sample(self._augmenter, record, rng)

    def _queue_batch(self):
        start = self._queued * self.batch_size
        if start >= len(self._order):
            return
        positions = range(start, start + self.batch_size)
        pad = max(0, start + self.batch_size - len(self._order))
        self._pending.append(([self._workers.submit(self._sample, self._order[p % len(self._order)],
                                                    data.sample_rng(self._seed, self._pass, p))
                               for p in positions], pad))
        self._queued += 1

    def reset(self):
        for futures, _ in self._pending:
            for future in futures:
                future.cancel()
        self._pending.clear()
        self._pass += 1
        self._order, self._queued = data.pass_order(self._keys, self._seed, self._pass), 0
        self._queue_batch()

    def next(self):
        if not self._pending:
            raise StopIteration
        futures, pad = self._pending.popleft()
        self._queue_batch()
        samples = [future.result() for future in futures]
        pixels = np.stack([pixels for pixels, _ in samples])
        label = mx.nd.array([label for _, label in samples])
        return mx.io.DataBatch([mx.nd.from_numpy(pixels)], [label], pad=pad, provide_data=self.provide_data,
                               provide_label=self.provide_label)
