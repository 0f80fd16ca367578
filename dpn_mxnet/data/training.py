"""Training batches: the shards of a .rec that the workers of a job read, and the iterator whose every epoch is a
pure function of (seed, shard, epoch), under either augmentation (``aug="stock"``: MXNet's ImageRecordIter;
``aug="fork"``: the authors' fork, ``pipeline``)."""
import mxnet as mx
import numpy as np

from ..checks import DataError
from ..cli import AUGMENTATIONS
from .draws import pass_key
from .image_record_iter import normalisation, record_iter
from .pipeline import ForkRecordIter
from .pixels import BICUBIC
from .records import keys_in_file_order, num_records, rec_paths
from .spec import Augmentation


def shard_sizes(num_records, num_parts):
    """Records per part as ImageRecordIter splits an indexed .rec (dmlc's IndexedRecordIOSplitter: contiguous
    parts of ceil(N / parts) records, the last one shorter)."""
    step = -(-num_records // num_parts)
    return [max(0, min(step, num_records - part * step)) for part in range(num_parts)]


def batches_per_epoch(num_records, num_parts, batch_size):
    """Batches every worker runs per epoch: its share floor(N / parts) in batches, rounded up (as MXNet's fit.py).
    All workers must run the same number of batches, or dist_sync waits forever for the one that stopped early."""
    if num_records < 1 or num_parts < 1 or batch_size < 1:
        raise DataError("batches_per_epoch needs positive counts, got %d records, %d parts, batch %d"
                        % (num_records, num_parts, batch_size))
    return max(1, -(-(num_records // num_parts) // batch_size))


def train_iter(rec, batch_size, image_size, num_parts=1, part_index=0, batches_per_epoch=None, threads=4, seed=0,
               aug="stock", **augmentation):
    """Shuffled training batches of part ``part_index`` of ``num_parts`` with the authors' augmentation
    (``spec.Augmentation(image_size, **augmentation)``: min_area, max_area, aspect, hsl, mirror), as an
    ``EpochBatches``: epoch e (``start_epoch(e)``) is a pure function of (seed, part_index, e), whatever ran
    before it and however many decode threads run.

    aug="stock": ``mx.io.ImageRecordIter`` with ``threads`` decode threads (at most ``record_iter_threads()``,
    MXNet's cap): random resized crop (area
    a ~ U[min_area, max_area] of the image and aspect w/h ~ U[aspect], inverted with probability 1/2, drawn up to
    ten times until the crop fits, else an unscaled centre crop), bicubic, random mirror, HSL jitter,
    normalisation. A new ImageRecordIter serves each pass, its shuffle ``seed`` and ``seed_aug`` drawn from
    ``draws.pass_key``; MXNet reseeds the augmentation of every record with ``seed_aug`` + its slot in the batch, so
    within one pass the slots of every batch repeat their draws (docs/determinism.md).
    aug="fork": the crop geometry of the authors' fork (see ``spec.Augmentation``), computed in ``threads`` worker
    threads (``pipeline.ForkRecordIter``; threads, not processes: forking a process that already runs MXNet
    and OpenCV threads can hang the children), the same parts; every sample draws from its own generator.
    With ``batches_per_epoch`` an epoch has exactly that many batches, else one pass over the part.
    """
    if aug not in AUGMENTATIONS:
        raise DataError("aug must be one of %s, got %r" % (", ".join(AUGMENTATIONS), aug))
    if threads < 1:
        raise DataError("threads must be at least 1, got %d" % threads)
    transform = Augmentation(image_size, **augmentation)
    rec, idx = rec_paths(rec)
    if not 0 <= part_index < num_parts:
        raise DataError("part_index %d is outside 0..%d (num_parts %d)" % (part_index, num_parts - 1, num_parts))
    total = num_records(rec)
    shard = shard_sizes(total, num_parts)
    if min(shard) < batch_size:
        raise DataError("%s: %d records in %d parts give a part of %d records, fewer than the batch of %d"
                        % (rec, total, num_parts, min(shard), batch_size))
    if aug == "stock":
        options = dict(
            path_imgrec=rec, path_imgidx=idx, data_shape=(3, image_size, image_size), batch_size=batch_size,
            num_parts=num_parts, part_index=part_index, shuffle=True, preprocess_threads=threads,
            random_resized_crop=True, min_random_area=transform.min_area, max_random_area=transform.max_area,
            min_aspect_ratio=transform.aspect[0], max_aspect_ratio=transform.aspect[1], rand_mirror=transform.mirror,
            random_h=transform.hsl[0], random_s=transform.hsl[1], random_l=transform.hsl[2], inter_method=BICUBIC,
            verbose=False, **normalisation())

        def new_pass(key):
            shuffle_seed, aug_seed = record_iter_seeds(key)
            return record_iter(seed=shuffle_seed, seed_aug=aug_seed, **options)
    else:
        keys = keys_in_file_order(rec)[part_index * shard[0]:][:shard[part_index]]
        threaded = ForkRecordIter(rec, keys, transform, batch_size, image_size, threads)

        def new_pass(key):
            threaded.start(key)
            return threaded
    descs = ([mx.io.DataDesc("data", (batch_size, 3, image_size, image_size))],
             [mx.io.DataDesc("softmax_label", (batch_size,))])
    return EpochBatches(new_pass, (seed, part_index), batch_size, *descs, batches_per_epoch)


def record_iter_seeds(key):
    """(shuffle seed, augmentation seed) of ImageRecordIter for the pass ``key``: two 31-bit integers (its C++
    parameters are ints)."""
    return tuple(int(s) & 0x7FFFFFFF for s in np.random.SeedSequence(key).generate_state(2))


class EpochBatches(mx.io.DataIter):
    """Training batches whose epoch e is a pure function of (seed, part, e): ``start_epoch(e)`` begins it from any
    state, so a resumed run continues with the epoch after its checkpoint instead of replaying the first;
    ``reset()`` begins the next epoch. An epoch has ``batches_per_epoch`` batches (None: one pass): a part that
    ends sooner starts another pass of the same epoch (repeat 1, 2, ...), a longer one stops early.
    ``new_pass(key)`` returns an iterator over one shuffled pass drawn from ``draws.pass_key``."""

    def __init__(self, new_pass, stream, batch_size, provide_data, provide_label, batches_per_epoch=None):
        super().__init__(batch_size)
        self.provide_data, self.provide_label = provide_data, provide_label
        self._new_pass, self._stream, self._per_epoch = new_pass, stream, batches_per_epoch
        self.epoch, self._pass = -1, None
        self.reset()

    def start_epoch(self, epoch):
        self.epoch, self._repeat, self._count, self._pass = epoch, 0, 0, None

    def reset(self):
        self.start_epoch(self.epoch + 1)

    def next(self):
        if self._per_epoch is not None and self._count >= self._per_epoch:
            raise StopIteration
        if self._pass is None:  # built on first use: a pass already under way may read and decode ahead
            self._pass = self._new_pass(pass_key(*self._stream, self.epoch, self._repeat))
        try:
            batch = self._pass.next()
        except StopIteration:
            if self._per_epoch is None:
                raise
            self._repeat += 1
            self._pass = self._new_pass(pass_key(*self._stream, self.epoch, self._repeat))
            batch = self._pass.next()
        self._count += 1
        return batch


