"""The ``aug="fork"`` training iterator: records read from a memory-mapped .rec, JPEGs decoded by libjpeg-turbo
(simplejpeg; OpenCV for anything else), cropped and resized by OpenCV into per-thread buffers, then jittered,
mirrored and normalised by ``fork_kernel`` straight into the batch, in worker threads.

The random draws are ``data.ForkAugmenter.draw``'s, from ``data.sample_rng(key, position)``, and the pixels
equal those of the straightforward implementation (tests/fork_reference.py) bit for bit, whatever the number of
threads.
"""
import collections
import concurrent.futures
import mmap
import os
import struct
import threading

import cv2
import mxnet as mx
import numba
import numpy as np
import simplejpeg

from dpn_mxnet import data, fork_kernel

_MAGIC_BYTES = struct.pack("<I", data._RECORD_MAGIC)
_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1


class MappedRecords:
    """Records of an indexed .rec by key, read from a read-only memory map: no file position, so no lock."""

    def __init__(self, rec):
        rec, idx = data.rec_paths(rec)
        index = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
        self._offsets, self._rec = dict(index.idx), rec
        index.close()
        with open(rec, "rb") as stream:
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)

    def offset(self, key):
        """Byte offset of the record ``key`` in the .rec."""
        return self._offsets[key]

    def read(self, key):
        """The record ``key`` as bytes-like (a view into the map unless RecordIO split it into parts, which are
        joined with the magic number that split them, as dmlc's reader does)."""
        offset, parts = self._offsets[key], []
        while True:
            if offset + data._RECORD_HEAD.size > len(self._view):
                raise data.DataError("%s: truncated: record %s ends after the end of the file" % (self._rec, key))
            magic, head = data._RECORD_HEAD.unpack_from(self._view, offset)
            length, flag = head & ((1 << 29) - 1), head >> 29
            if magic != data._RECORD_MAGIC or offset + data._RECORD_HEAD.size + length > len(self._view):
                raise data.DataError("%s: corrupt: record %s at byte %d is not a whole record"
                                     % (self._rec, key, offset))
            parts.append(self._view[offset + data._RECORD_HEAD.size:offset + data._RECORD_HEAD.size + length])
            if flag in (0, 3):
                return parts[0] if len(parts) == 1 else _MAGIC_BYTES.join(parts)
            offset += data._RECORD_HEAD.size + (-length % 4) + length


def _exif_free_jpeg(encoded):
    """Whether ``encoded`` is a JPEG without an Exif segment (OpenCV would apply an Exif orientation)."""
    if encoded[:2] != b"\xff\xd8":
        return False
    position = 2
    while position + 4 <= len(encoded) and encoded[position] == 0xFF:
        marker = encoded[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (_SOS, _EOI):
            return True
        if marker == _APP1 and encoded[position + 4:position + 10] == b"Exif\x00\x00":
            return False
        position += 2 + (encoded[position + 2] << 8 | encoded[position + 3])
    return False


def decode_bgr(encoded):
    """A record's image as 3-channel BGR uint8 equal to ``cv2.imdecode(..., IMREAD_COLOR)``: libjpeg-turbo through
    simplejpeg for plain JPEGs (colour or greyscale, no Exif), OpenCV for the rest (Exif, CMYK, PNG, damaged
    data). None if neither can decode it."""
    if _exif_free_jpeg(encoded):
        try:
            return simplejpeg.decode_jpeg(encoded, colorspace="BGR")
        except ValueError:  # CMYK/YCCK, or data that libjpeg-turbo calls damaged
            pass
    return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)


_M32 = 0xFFFFFFFF
_HASH_A, _MULT_A, _HASH_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED  # numpy's SeedSequence
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT, _M128 = 0x2360ED051FC65DA44385DF649FCCF645, (1 << 128) - 1  # PCG64's 128-bit LCG multiplier


@numba.njit(cache=True)
def _seed_words(entropy):
    """numpy's SeedSequence(entropy).generate_state(8, uint32) for a pool of 4 words (NumPy 1.17+)."""
    pool = np.zeros(4, np.uint64)
    hash_const = np.uint64(_HASH_A)
    for i in range(4):
        value = (entropy[i] if i < len(entropy) else np.uint64(0)) ^ hash_const
        hash_const = (hash_const * np.uint64(_MULT_A)) & np.uint64(_M32)
        value = (value * hash_const) & np.uint64(_M32)
        pool[i] = value ^ (value >> np.uint64(16))
    for source in range(4 + max(0, len(entropy) - 4)):
        for target in range(4):
            if source < 4 and source == target:
                continue
            value = (pool[source] if source < 4 else entropy[source]) ^ hash_const
            hash_const = (hash_const * np.uint64(_MULT_A)) & np.uint64(_M32)
            value = (value * hash_const) & np.uint64(_M32)
            value ^= value >> np.uint64(16)
            mixed = (np.uint64(_MIX_L) * pool[target] - np.uint64(_MIX_R) * value) & np.uint64(_M32)
            pool[target] = mixed ^ (mixed >> np.uint64(16))
    words = np.zeros(8, np.uint64)
    hash_const = np.uint64(_HASH_B)
    for i in range(8):
        value = pool[i % 4] ^ hash_const
        hash_const = (hash_const * np.uint64(_MULT_B)) & np.uint64(_M32)
        value = (value * hash_const) & np.uint64(_M32)
        words[i] = value ^ (value >> np.uint64(16))
    return words


def pcg64_state(key, position):
    """The PCG64 (state, increment) of ``data.sample_rng(key, position)``, without building the SeedSequence, PCG64
    and Generator objects that make numpy's route slow."""
    entropy = []
    for value in (*key, position):
        entropy.append(value & _M32)
        value >>= 32
        while value:
            entropy.append(value & _M32)
            value >>= 32
    words = [int(word) for word in _seed_words(np.array(entropy, np.uint64))]
    state, stream = (words[0] | words[1] << 32) << 64 | words[2] | words[3] << 32, \
        (words[4] | words[5] << 32) << 64 | words[6] | words[7] << 32
    increment = (stream << 1 | 1) & _M128
    return ((increment + state) * _PCG_MULT + increment) & _M128, increment


class ShuffledPasses(mx.io.DataIter):
    """The pass bookkeeping of the fork iterators: ``start(key)`` begins the pass ``key`` (``data.pass_key``),
    which visits ``keys`` in ``data.pass_order(keys, key)``, in ceil(len(keys) / batch) batches, the last one
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
        self._key, self._order, self._queued = key, data.pass_order(self._keys, key), 0
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


class ForkRecordIter(ShuffledPasses):
    """Batches of ``augmenter`` (a ``data.ForkAugmenter``) over ``keys`` of a .rec, shuffled every pass (see
    ``ShuffledPasses``), computed by ``threads`` worker threads; all the work of a sample, its generator
    included (in the state of ``data.sample_rng(key, position)`` for position ``position`` of pass ``key``),
    runs on a worker.

    Every batch is written into arrays allocated for it alone and handed to MXNet without a copy
    (``mx.nd.from_numpy``, which keeps the array alive and read-only): nothing writes to a batch once it is out."""

    def __init__(self, rec, keys, augmenter, batch_size, image_size, threads):
        super().__init__(keys, batch_size, image_size)
        self._rec, self._records = os.fspath(rec), MappedRecords(rec)
        self._augmenter, self._size = augmenter, image_size
        self._workers = concurrent.futures.ThreadPoolExecutor(threads)
        self._scratch = threading.local()

    def _scratchpad(self):
        """This thread's resize target, kernel scratch rows and random generator."""
        scratch = self._scratch
        if not hasattr(scratch, "crop"):
            scratch.crop = np.empty((self._size, self._size, 3), np.uint8)
            scratch.rows = np.empty((3, self._size), np.float32)
            scratch.bits = np.random.PCG64()
            scratch.rng = np.random.Generator(scratch.bits)
        return scratch

    def _sample_rng(self, key, position):
        """This thread's generator, set to the state of ``data.sample_rng(key, position)``."""
        scratch = self._scratchpad()
        state, increment = pcg64_state(key, position)
        scratch.bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": increment},
                              "has_uint32": 0, "uinteger": 0}
        return scratch.rng

    def _sample(self, record, key, position, out, labels, row):
        rng = self._sample_rng(key, position)
        header, encoded = mx.recordio.unpack(self._records.read(record))
        image = decode_bgr(encoded)
        if image is None:
            raise data.DataError(data.undecodable(self._rec, header.id, self._records.offset(record)))
        (left, top, width, height), offsets, mirror = self._augmenter.draw(*image.shape[:2], rng)
        scratch = self._scratchpad()
        cv2.resize(image[top:top + height, left:left + width], (self._size, self._size), dst=scratch.crop,
                   interpolation=cv2.INTER_CUBIC)
        fork_kernel.augment_into(scratch.crop, offsets, mirror, out[row], scratch.rows)
        labels[row] = header.label if header.flag == 0 else header.label[0]

    def _queue(self, key, samples):
        out = np.empty((self.batch_size, 3, self._size, self._size), np.float32)
        labels = np.empty(self.batch_size, np.float32)
        futures = [self._workers.submit(self._sample, record, key, position, out, labels, row)
                   for row, (record, position) in enumerate(samples)]
        return futures, (out, labels)

    def _finish(self, state):
        out, labels = state
        return mx.nd.from_numpy(out), mx.nd.array(labels)
