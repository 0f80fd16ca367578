"""The ``aug="fork"`` training iterator: records read from a memory-mapped .rec, JPEGs decoded by libjpeg-turbo
(simplejpeg; OpenCV for anything else), cropped, resized, jittered, mirrored and normalised by ``kernel`` straight
into the batch, in worker threads.

The random draws are made by ``draws``, and the pixels equal those of the straightforward implementation
(tools/dev/fork_reference.py) bit for bit, whatever the number of threads.
"""
import collections
import concurrent.futures
import os
import sys
import threading

import cv2
import mxnet as mx
import numpy as np

from ..checks import DataError
from . import kernel
from .decode import decode_bgr, jpeg_shape
from .draws import pass_order, sample_draws
from .records import MappedRecords, undecodable


class ShuffledPasses(mx.io.DataIter):
    """The pass bookkeeping of the fork iterators: ``start(key)`` begins the pass ``key`` (``draws.pass_key``),
    which visits ``keys`` in ``draws.pass_order(keys, key)``, in ceil(len(keys) / batch) batches, the last one
    completed from the start of the pass (``pad`` rows, as ImageRecordIter's round_batch); one batch is queued
    ahead. A subclass's ``_queue(key, [(record key, position), ...])`` starts a batch and returns (futures,
    state); ``_finish(state)`` gives its (data, label) once the futures are done."""

    def __init__(self, keys, batch_size, image_size):
        super().__init__(batch_size)
        self._keys, self._key = list(keys), None
        self._pending, self._order, self._queued = collections.deque(), [], 0
        self.provide_data = [mx.io.DataDesc("data", (batch_size, 3, image_size, image_size))]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batch_size,))]

    def _queue_batch(self):
        start = self._queued * self.batch_size
        if start >= len(self._order):
            return
        samples = [(self._order[p % len(self._order)], p) for p in range(start, start + self.batch_size)]
        self._pending.append((*self._queue(self._key, samples), max(0, start + self.batch_size - len(self._order))))
        self._queued += 1

    def start(self, key):
        for futures, _, _ in self._pending:
            for future in futures:
                future.cancel()
        self._pending.clear()
        self._key, self._order, self._queued = key, pass_order(self._keys, key), 0
        self._queue_batch()

    def reset(self):
        self.start(self._key)

    def next(self):
        if not self._pending:
            raise StopIteration
        futures, state, pad = self._pending.popleft()
        self._queue_batch()
        for future in futures:
            future.result()
        pixels, label = self._finish(state)
        return mx.io.DataBatch([pixels], [label], pad=pad, provide_data=self.provide_data,
                               provide_label=self.provide_label)


class BatchMemory:
    """Batch arrays of one shape, each handed out again only once nothing but this pool refers to it: the
    ``mx.nd.from_numpy`` NDArray of a batch holds a reference to its array until MXNet frees it, and a worker's view
    of a row until the worker is done. Reusing the memory spares the page faults of a fresh allocation."""

    def __init__(self, shape):
        self._shape, self._arrays = shape, []

    def __len__(self):
        return len(self._arrays)

    def take(self):
        for array in self._arrays:
            if sys.getrefcount(array) == 3:  # this list, the loop variable and getrefcount's argument
                array.flags.writeable = True  # from_numpy made it read-only while MXNet held it
                return array
        self._arrays.append(np.empty(self._shape, np.float32))
        return self._arrays[-1]


class ForkRecordIter(ShuffledPasses):
    """Batches of ``augmentation`` (a ``spec.Augmentation``) over ``keys`` of a .rec, shuffled every pass (see
    ``ShuffledPasses``). The calling thread plans each batch: it reads the records, their labels and, for plain
    JPEGs, their size from the JPEG header, and makes the random draws of the whole batch in one compiled call
    (``draws.sample_draws``: sample ``position`` of the pass ``key`` has a generator of its own).
    ``threads`` worker threads then decode, crop, resize and augment the samples; an image whose decoded size is
    not its header's, or that has no header to read (Exif, PNG), gets its draws on the worker, from the same
    generator. A sample's result depends on its draws alone, not on the thread that made it.

    Every batch is written into an array that nothing else refers to (``BatchMemory``) and handed to MXNet without
    a copy (``mx.nd.from_numpy``, which keeps the array alive and read-only): nothing writes to a batch while
    anyone holds it."""

    def __init__(self, rec, keys, augmentation, batch_size, image_size, threads):
        super().__init__(keys, batch_size, image_size)
        self._rec, self._records = os.fspath(rec), MappedRecords(rec)
        self._augmentation, self._size = augmentation, image_size
        self._workers, self._threads = concurrent.futures.ThreadPoolExecutor(threads), threads
        self._scratch = threading.local()
        self._memory = BatchMemory((batch_size, 3, image_size, image_size))
        cv2.setNumThreads(1)  # the worker threads are the parallelism; OpenCV's own threads would only contend

    def _scratchpad(self):
        """This thread's ``kernel.Scratch``."""
        if not hasattr(self._scratch, "kernel"):
            self._scratch.kernel = kernel.Scratch(self._size, self._size)
        return self._scratch.kernel

    def _pixels(self, key, record, position, header, encoded, shape, draws, out):
        image = decode_bgr(encoded, plain_jpeg=shape is not None)
        if image is None:
            raise DataError(undecodable(self._rec, header.id, self._records.offset(record)))
        if image.shape[:2] != shape:
            draws, = sample_draws(self._augmentation, key, [position], [image.shape[:2]])
        kernel.sample_into(image, draws, out, self._scratchpad())

    def _queue(self, key, samples):
        out, labels = self._memory.take(), np.empty(self.batch_size, np.float32)
        records = [mx.recordio.unpack(self._records.read(record)) for record, _ in samples]
        shapes = [jpeg_shape(encoded) for _, encoded in records]
        known = [row for row, shape in enumerate(shapes) if shape is not None]
        draws = dict(zip(known, sample_draws(self._augmentation, key, [samples[row][1] for row in known],
                                             [shapes[row] for row in known])))
        tasks = []
        for row, ((record, position), (header, encoded), shape) in enumerate(zip(samples, records, shapes)):
            labels[row] = header.label if header.flag == 0 else header.label[0]
            tasks.append((key, record, position, header, encoded, shape, draws.get(row), out[row]))
        step = -(-len(tasks) // (2 * self._threads))  # two tasks per thread: few hand-offs, balanced ends
        futures = [self._workers.submit(self._pixel_rows, tasks[start:start + step])
                   for start in range(0, len(tasks), step)]
        return futures, (out, labels)

    def _pixel_rows(self, tasks):
        for task in tasks:
            self._pixels(*task)

    def _finish(self, state):
        out, labels = state
        return mx.nd.from_numpy(out), mx.nd.from_numpy(labels)
