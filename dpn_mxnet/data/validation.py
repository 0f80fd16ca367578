"""Validation batches: the authors' protocol (short side to S, centre S x S crop, every record once per pass) and
10-crop testing."""
import mxnet as mx
import numpy as np

from ..checks import DataError
from .image_record_iter import normalisation, record_iter
from .pixels import BICUBIC, MEAN_RGB, SCALE
from .records import keys_in_file_order, num_records, rec_paths, undecodable


class OnePassIter(mx.io.DataIter):
    """Wraps a non-wrapping ImageRecordIter (``round_batch=False``) so that a pass yields each of ``num_records``
    records exactly once: it stops after ceil(N / batch) batches and sets ``pad`` itself (MXNet reports 0 there)
    and fills the padding rows with copies of the batch's first rows instead of stale data."""

    def __init__(self, inner, num_records, rec):
        super().__init__(inner.batch_size)
        self._inner, self._total, self._rec, self._seen = inner, num_records, rec, 0
        self.provide_data, self.provide_label = inner.provide_data, inner.provide_label

    def reset(self):
        self._inner.reset()
        self._seen = 0

    def next(self):
        if self._seen >= self._total:
            raise StopIteration
        try:
            batch = self._inner.next()
        except StopIteration:
            raise DataError("%s: the iterator ended after %d of the %d records in the index"
                            % (self._rec, self._seen, self._total)) from None
        pad = max(0, self._seen + self.batch_size - self._total)
        self._seen += self.batch_size - pad
        data, label = batch.data, batch.label
        if pad:
            valid = self.batch_size - pad
            rows = mx.nd.array(np.r_[np.arange(valid), np.arange(pad) % valid], dtype="int32")
            data = [mx.nd.take(array, rows) for array in data]
            label = [mx.nd.take(array, rows) for array in label]
        return mx.io.DataBatch(data, label, pad=pad, provide_data=self.provide_data,
                               provide_label=self.provide_label)


def val_iter(rec, batch_size, image_size, threads=4, resize=None):
    """The authors' validation protocol: short side resized (bicubic) to ``resize`` (default ``image_size``, i.e.
    crop fraction 1.0), centre ``image_size`` crop, no augmentation. Every record once per pass, in file order;
    ``batch.pad`` counts the padding rows of the last batch."""
    resize = image_size if resize is None else resize
    if image_size < 1 or resize < image_size:
        raise DataError("validation needs 1 <= image_size <= resize, got image_size %d, resize %d"
                        % (image_size, resize))
    rec, idx = rec_paths(rec)
    total = num_records(rec)  # checks the index first: ImageRecordIter crashes on an empty one
    inner = record_iter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, image_size, image_size),
                        batch_size=batch_size, resize=resize, inter_method=BICUBIC, round_batch=False,
                        preprocess_threads=threads, verbose=False, **normalisation())
    return OnePassIter(inner, total, rec)


class TenCropIter(mx.io.DataIter):
    """10-crop testing: each record's short side is resized (bicubic) to ``resize``; the centre and the four
    corner ``image_size`` crops, then the same five mirrored (gluoncv's ``ten_crop`` order: centre, top-left,
    bottom-left, top-right, bottom-right). A batch of ``batch_size`` records has 10 x batch_size images,
    consecutive groups of 10 per record, each label repeated 10 times; ``pad`` counts padding images (10 per
    missing record)."""

    def __init__(self, rec, batch_size, image_size, resize):
        super().__init__(batch_size * 10)
        if image_size < 1 or resize < image_size:
            raise DataError("10-crop needs 1 <= image_size <= resize, got image_size %d, resize %d"
                            % (image_size, resize))
        rec, idx = rec_paths(rec)
        self._rec, self._keys = rec, keys_in_file_order(rec)
        self._records, self._size, self._resize = batch_size, image_size, resize
        self._record = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
        self._next = 0
        self.provide_data = [mx.io.DataDesc("data", (self.batch_size, 3, image_size, image_size))]
        self.provide_label = [mx.io.DataDesc("softmax_label", (self.batch_size,))]

    def reset(self):
        self._next = 0

    def _crops(self, key):
        from gluoncv.data.transforms.image import ten_crop
        header, encoded = mx.recordio.unpack(self._record.read_idx(key))
        try:
            image = mx.image.imdecode(encoded)
        except mx.base.MXNetError:
            raise DataError(undecodable(self._rec, header.id, self._record.idx[key])) from None
        image = mx.image.resize_short(image, self._resize, interp=BICUBIC)
        crops = ten_crop(image, (self._size, self._size)).astype("float32")
        crops = (crops - mx.nd.array(MEAN_RGB).reshape((1, 1, 1, 3))) * SCALE
        label = header.label if header.flag == 0 else header.label[0]
        return crops.transpose((0, 3, 1, 2)), float(label)

    def next(self):
        if self._next >= len(self._keys):
            raise StopIteration
        keys = self._keys[self._next:self._next + self._records]
        self._next += len(keys)
        crops, labels = zip(*(self._crops(key) for key in keys))
        pad = self._records - len(keys)
        crops += crops[:1] * pad
        labels += labels[:1] * pad
        data = mx.nd.concat(*crops, dim=0)
        label = mx.nd.array(np.repeat(labels, 10))
        return mx.io.DataBatch([data], [label], pad=10 * pad, provide_data=self.provide_data,
                               provide_label=self.provide_label)


def ten_crop_iter(rec, batch_size, image_size, resize):
    """10-crop validation batches (see ``TenCropIter``): ``batch_size`` records -> 10 x batch_size images."""
    return TenCropIter(rec, batch_size, image_size, resize)

