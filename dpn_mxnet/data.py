"""ImageNet input pipeline on RecordIO files: the authors' training augmentation, their validation protocol
(short side to S, centre S x S crop), a 10-crop option, sharding for distributed training and input checks.

Every iterator yields float32 NCHW batches, RGB, normalised as (pixel - MEAN_RGB) * SCALE.
"""
import difflib
import math
import os
import re
import shutil
import struct

import mxnet as mx
import numpy as np

from .checks import DataError, describe_error
from .cli import AUGMENTATIONS, BAD_RECORDS

MEAN_RGB = (124, 117, 104)
SCALE = 0.0167
BICUBIC = 2
# The authors' augmentation (their README): crop area 8-100 %, aspect 3/4-4/3, HSL jitter, random mirror.
MIN_AREA, MAX_AREA = 0.08, 1.0
ASPECT = (3 / 4, 4 / 3)
HSL = (20, 40, 50)

_RECORD_MAGIC = 0xCED7230A
_RECORD_HEAD = struct.Struct("<II")  # magic, (continue flag << 29) | length


class UndecodableImage(DataError):
    """An image that cannot be decoded: an image file, or the record whose IRHeader id is ``record_id``."""

    def __init__(self, message, record_id=None):
        super().__init__(message)
        self.record_id = record_id


# ---------------------------------------------------------------------------------------------------------------
# Record files

def rec_paths(rec):
    """(``x.rec``, ``x.idx``) for ``x.rec``, checking that both exist."""
    rec = os.fspath(rec)
    idx = os.path.splitext(rec)[0] + ".idx"
    if not os.path.isfile(rec):
        raise DataError("%s: no such record file" % rec)
    if not os.path.isfile(idx):
        raise DataError("%s: no such index file (im2rec writes it beside %s)" % (idx, os.path.basename(rec)))
    return rec, idx


def _read_offsets(rec):
    """Record offsets from the .idx (sorted, as MXNet reads them); the first and last records must lie inside the
    .rec, which must be a RecordIO file."""
    rec, idx = rec_paths(rec)
    offsets = []
    with open(idx) as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise DataError("%s line %d: expected '<key>\\t<byte offset>', got %r" % (idx, number, line.strip()))
            offsets.append(int(fields[1]))
    if not offsets:
        raise DataError("%s: empty list, the index holds no records" % idx)
    offsets.sort()
    size = os.path.getsize(rec)
    with open(rec, "rb") as stream:
        start = stream.read(_RECORD_HEAD.size)
        if len(start) < _RECORD_HEAD.size or _RECORD_HEAD.unpack(start)[0] != _RECORD_MAGIC:
            raise DataError("%s: not a RecordIO file (it does not start with a record; expected the .rec that "
                            "im2rec writes)" % rec)
        if offsets[-1] >= size:
            raise DataError("%s: truncated or not the file of its index: %s lists a record at byte %d, after the "
                            "end of the file (%d bytes)" % (rec, idx, offsets[-1], size))
        for offset in (offsets[0], offsets[-1]):
            _record_head(stream, rec, offset, size, idx)
    return offsets, size


def _record_head(stream, rec, offset, size, idx):
    """The first bytes of the record at ``offset`` after checking its RecordIO header and length."""
    stream.seek(offset)
    head = stream.read(_RECORD_HEAD.size + mx.recordio._IR_SIZE)
    magic, length = _RECORD_HEAD.unpack_from(head) if len(head) >= _RECORD_HEAD.size else (None, 0)
    length &= (1 << 29) - 1
    if len(head) >= _RECORD_HEAD.size and magic != _RECORD_MAGIC:
        raise DataError("%s: corrupt: no record starts at byte %d (listed in %s; is it the index of another "
                        ".rec?)" % (rec, offset, os.path.basename(idx)))
    if offset + _RECORD_HEAD.size + max(length, mx.recordio._IR_SIZE) > size:
        raise DataError("%s: truncated: the record at byte %d ends after the end of the file (%d bytes)"
                        % (rec, offset, size))
    return head, length


def num_records(rec):
    """Number of records in ``rec`` (from its .idx)."""
    return len(_read_offsets(rec)[0])


def _record_starts(rec, size):
    """The byte offsets of the records of ``rec`` (``size`` bytes), found by walking its record heads (8 bytes read
    per record): what an index of the whole file lists."""
    starts, offset = [], 0
    with open(rec, "rb") as stream:
        while offset < size:
            head = os.pread(stream.fileno(), _RECORD_HEAD.size, offset)
            magic, length = _RECORD_HEAD.unpack(head) if len(head) == _RECORD_HEAD.size else (None, 0)
            if magic != _RECORD_MAGIC:
                raise DataError("%s: corrupt: the record before byte %d is not followed by another one" % (rec, offset))
            if length >> 29 in (0, 1):  # a whole record, or the first part of a split one
                starts.append(offset)
            offset += _RECORD_HEAD.size + (((length & ((1 << 29) - 1)) + 3) & ~3)
    return starts


def _check_covered(rec, idx, offsets, size):
    """The index lists every record of the .rec, each once: no record is silently left out."""
    starts = _record_starts(rec, size)
    if starts != offsets:
        raise DataError("%s holds %d records but its index %s lists %d%s: give the index written with this .rec "
                        "(im2rec writes both)" % (rec, len(starts), idx, len(offsets),
                                                  "" if len(starts) != len(offsets) else ", not all of them"))


# The first bytes of the image formats that OpenCV decodes (and im2rec or OpenCV write): (offset, bytes).
_IMAGE_SIGNATURES = (
    (0, b"\xff\xd8\xff"),                                    # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),                               # PNG
    (0, b"BM"),                                              # BMP
    (0, b"II*\x00"), (0, b"MM\x00*"),                        # TIFF
    (8, b"WEBP"),                                            # WebP (in a RIFF container)
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n"), (0, b"\xffO\xffQ"),  # JPEG 2000 file, codestream
    (0, b"\x59\xa6\x6a\x95"),                                # Sun raster
    (0, b"\x76\x2f\x31\x01"),                                # OpenEXR
    (0, b"#?RADIANCE"), (0, b"#?RGBE"),                      # Radiance HDR
    (0, b"PF\n"), (0, b"Pf\n"),                              # PFM
)
_PNM_SIGNATURE = re.compile(rb"P[1-7]\s")                    # PBM, PGM, PPM, PAM
SIGNATURE_BYTES = 12


def is_image_signature(head):
    """Whether the first bytes of an encoded image belong to a format OpenCV decodes."""
    return (any(head[at:at + len(magic)] == magic for at, magic in _IMAGE_SIGNATURES)
            or bool(_PNM_SIGNATURE.match(head)))


def _headers(rec, offsets, size, idx):
    """(offset, IRHeader, first label, first bytes of the image) of every record, reading only the record heads
    (no image bytes; about one 4 KB page per record, e.g. 5 GB of reads for ImageNet's 1.28 M training records)."""
    with open(rec, "rb") as stream:
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead of the image bytes
        for offset in offsets:
            head, length = _record_head(stream, rec, offset, size, idx)
            flag = struct.unpack_from(mx.recordio._IR_FORMAT, head, _RECORD_HEAD.size)[0]
            rest = stream.read(4 * flag + SIGNATURE_BYTES)
            header, _ = mx.recordio.unpack(head[_RECORD_HEAD.size:] + rest[:4 * flag])
            image = rest[4 * flag:max(4 * flag, length - mx.recordio._IR_SIZE)]
            yield offset, header, float(header.label if flag == 0 else header.label[0]), image


def keys_in_file_order(rec):
    """Record keys of ``rec`` in the order of the file (the order ImageRecordIter reads and splits them)."""
    rec, idx = rec_paths(rec)
    num_records(rec)  # checks the index
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    keys = sorted(reader.keys, key=reader.idx.get)
    reader.close()
    return keys


def read_labels(rec):
    """Labels of all records in file order (one read of each record head, no decoding)."""
    offsets, size = _read_offsets(rec)
    return [label for _, _, label, _ in _headers(rec, offsets, size, rec_paths(rec)[1])]


def undecodable(rec, record_id, offset):
    """The one-line report of a record whose image cannot be decoded, naming its source file where the .lst that
    im2rec packed from lies beside the .rec."""
    source = _source_file(rec, record_id)
    return "%s: record id %d (byte %d%s) is not a decodable image" % (
        rec, record_id, offset, ", source file %s from the .lst beside it" % source if source else "")


def _source_file(rec, record_id):
    try:
        with open(os.path.splitext(rec)[0] + ".lst") as lines:
            for line in lines:
                fields = line.rstrip("\n").split("\t")
                if len(fields) >= 3 and fields[0].strip() == str(record_id):
                    return fields[-1]
    except OSError:
        pass
    return None


def _scan(rec, num_classes, stop):
    """(number of records, [(offset, report)] of the records whose image bytes no decoder recognises); with
    ``stop`` the first such record raises. Labels outside [0, num_classes) always raise."""
    offsets, size = _read_offsets(rec)
    idx = rec_paths(rec)[1]
    bad = []
    for offset, header, label, image in _headers(rec, offsets, size, idx):
        if num_classes is not None and not (label.is_integer() and 0 <= label < num_classes):
            raise DataError("%s: record id %d (byte %d) has label %g, expected an integer in [0, %d) "
                            "for %d classes" % (rec, header.id, offset, label, num_classes, num_classes))
        if not is_image_signature(image):
            if stop:
                raise DataError(undecodable(rec, header.id, offset))
            bad.append((offset, undecodable(rec, header.id, offset)))
    _check_covered(rec, idx, offsets, size)
    return len(offsets), bad


def check_rec(rec, num_classes=None):
    """Check a .rec/.idx pair: both present, index non-empty and listing every record of the file once, every
    record head intact, every record's image bytes starting like an image and, with ``num_classes``, every label an
    integer in [0, num_classes). Returns the number of records."""
    return _scan(os.fspath(rec), num_classes, stop=True)[0]


def readable_rec(rec, num_classes, bad_records, scratch):
    """(.rec to read, [report of each skipped record]) after ``check_rec``: with ``bad_records`` "stop" the first
    undecodable record raises; with "skip" they are left out of a copy written into the folder ``scratch`` (the
    readers, MXNet's included, then never see them; a .rec without such records is used as it is)."""
    if bad_records not in BAD_RECORDS:
        raise DataError("bad_records must be one of %s, got %r" % (", ".join(BAD_RECORDS), bad_records))
    rec = os.fspath(rec)
    _, bad = _scan(rec, num_classes, stop=bad_records == "stop")
    if not bad:
        return rec, []
    return _copy_without(rec, {offset for offset, _ in bad}, scratch), [report for _, report in bad]


def _copy_without(rec, offsets, folder):
    """A copy of ``rec`` (and its .idx, .lst) in ``folder`` without the records at ``offsets``."""
    rec, idx = rec_paths(rec)
    stem = os.path.join(folder, os.path.splitext(os.path.basename(rec))[0])
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    writer = mx.recordio.MXIndexedRecordIO(stem + ".idx", stem + ".rec", "w")
    for key in sorted(reader.keys, key=reader.idx.get):
        if reader.idx[key] not in offsets:
            writer.write_idx(key, reader.read_idx(key))
    reader.close()
    writer.close()
    if os.path.isfile(os.path.splitext(rec)[0] + ".lst"):
        shutil.copyfile(os.path.splitext(rec)[0] + ".lst", stem + ".lst")
    return stem + ".rec"


# ---------------------------------------------------------------------------------------------------------------
# Guarded ImageRecordIter

def _record_iter_params():
    """Parameter names documented in ImageRecordIter's docstring (the C++ iterator ignores any other name)."""
    return set(re.findall(r"^(\w+) : ", mx.io.ImageRecordIter.__doc__, flags=re.M))


def record_iter(**kwargs):
    """``mx.io.ImageRecordIter(**kwargs)``, refusing names it does not document (it would silently ignore a typo)
    and turning its C++ errors into one-line DataErrors."""
    known = _record_iter_params()
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise DataError("ImageRecordIter has no parameter %r%s" % (name, " (did you mean %r?)" % close[0]
                                                                        if close else ""))
    try:
        return mx.io.ImageRecordIter(**kwargs)
    except mx.base.MXNetError as err:
        raise DataError("ImageRecordIter(%s): %s" % (kwargs.get("path_imgrec"), describe_error(err))) from None


def record_iter_threads():
    """The most decode threads ImageRecordIter will use: it caps ``preprocess_threads`` at half the CPUs it may run
    on (assuming two hyper-threads per core), so on a 2-CPU machine it decodes on one thread."""
    return max(len(os.sched_getaffinity(0)) // 2, 1)


def normalisation():
    """ImageRecordIter's parameters for (pixel - MEAN_RGB) * SCALE."""
    return dict(mean_r=MEAN_RGB[0], mean_g=MEAN_RGB[1], mean_b=MEAN_RGB[2], scale=SCALE)


# ---------------------------------------------------------------------------------------------------------------
# Training augmentation (the iterators: training_data.py)

def pass_key(seed, part, epoch, repeat=0):
    """The entropy of one pass over a part: the seed, the part (a worker's rank), the epoch and, for a part that
    an epoch runs through more than once, the repeat."""
    return (seed, part, epoch, repeat)


class ForkAugmenter:
    """The training transform of the authors' MXNet fork (``aug_torch`` + their iterator's mirror and
    normalisation) on images decoded as OpenCV does (3-channel BGR); ``fork_draws`` makes its random draws and
    ``fork_pipeline`` computes the pixels:

    1. aspect: r = lo + (hi - lo)(u1 + u2)/2 (triangular); width and height are scaled by 1.1/r and 1.1 r,
       swapped with probability 1/2, giving W' = ceil(1.1 W / r), H' = ceil(1.1 H r);
    2. area: a ~ U[min_area, max_area]; s = max((S + 0.4) / H', (S + 0.4) / W') / sqrt(a); the stretched image
       scaled by s is cropped S x S at a uniform position, so the crop covers a fraction a of the stretched
       image's short-side square (its aspect in the original image is r^2 or 1/r^2);
    3. HSL: offsets (u1 + 4 u2)/5 mapped to [-max, max] (truncated to int), see ``hsl_jitter``;
    4. mirror with probability 1/2; (x - MEAN_RGB) * SCALE.
    The fork resamples the whole image twice (resize to W' x H', then warpAffine); here the crop window is mapped
    back to the original image, rounded to whole pixels, and resized once (bicubic): the same geometry to half a
    source pixel, at a fraction of the cost.

    Every random draw of sample ``position`` of the pass ``key`` (``pass_key``) comes from its own generator,
    ``np.random.default_rng([*key, position])``, in a fixed order (window, HSL, mirror), so a sample's result
    depends neither on thread scheduling nor on where a run resumed.
    """

    def __init__(self, image_size, min_area=MIN_AREA, max_area=MAX_AREA, aspect=ASPECT, hsl=HSL, mirror=True):
        self.size, self.area, self.aspect, self.hsl, self.mirror = image_size, (min_area, max_area), aspect, hsl, mirror


def hsl_jitter(bgr, offsets):
    """Add offsets (dH, dS, dL) to a BGR uint8 image in OpenCV's HLS space, clamping H to [0, 180] and S, L to
    [0, 255]: what ImageRecordIter's random_h/s/l and the fork's aug_torch (the same C++) do with their offsets."""
    import cv2
    d_h, d_s, d_l = offsets
    values = np.arange(256)
    table = np.stack([np.clip(values + d_h, 0, 180), np.clip(values + d_l, 0, 255), np.clip(values + d_s, 0, 255)],
                     axis=1).astype(np.uint8).reshape(1, 256, 3)
    return cv2.cvtColor(cv2.LUT(cv2.cvtColor(bgr, cv2.COLOR_BGR2HLS), table), cv2.COLOR_HLS2BGR)


def pass_order(keys, key):
    """The shuffled order of ``keys`` in the pass ``key`` (``pass_key``)."""
    return np.random.default_rng(key).permutation(keys).tolist()


# ---------------------------------------------------------------------------------------------------------------
# Validation

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


# ---------------------------------------------------------------------------------------------------------------
# Single image files (tools/predict.py)

def check_image_file(path):
    """Raise DataError for a missing file, UndecodableImage for one whose first bytes are no image format."""
    if not os.path.isfile(path):
        raise DataError("%s: no such image file" % path)
    with open(path, "rb") as head:
        if not is_image_signature(head.read(SIGNATURE_BYTES)):
            raise UndecodableImage(_not_an_image(path))


def _not_an_image(path):
    return "%s: not an image MXNet can decode (JPEG, PNG, BMP, ...)" % path


def load_image(path, image_size, resize=None):
    """An image file as a (1, 3, S, S) batch under the validation protocol: short side resized (bicubic) to
    ``resize`` (default ``image_size``), centre ``image_size`` crop, RGB, (pixel - MEAN_RGB) * SCALE."""
    check_image_file(path)
    try:
        image = mx.image.imread(path)  # RGB, HWC, uint8
    except mx.base.MXNetError:
        raise UndecodableImage(_not_an_image(path)) from None
    image = mx.image.resize_short(image, resize or image_size, interp=BICUBIC)
    image, _ = mx.image.center_crop(image, (image_size, image_size))
    normalised = (image.astype("float32") - mx.nd.array(MEAN_RGB)) * SCALE
    return normalised.transpose((2, 0, 1)).expand_dims(0)
