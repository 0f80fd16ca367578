"""Whole-file checks of a .rec/.idx pair before a run reads it, and copies without the records no decoder
recognises (``--bad-records skip``)."""
import os
import shutil

import mxnet as mx

from ..checks import DataError
from ..cli import BAD_RECORDS
from .records import index_offsets, rec_paths, record_heads, record_starts, undecodable
from .signatures import is_image_signature


def _check_covered(rec, idx, offsets, size):
    """The index lists every record of the .rec, each once: no record is silently left out."""
    starts = record_starts(rec, size)
    if starts != offsets:
        raise DataError("%s holds %d records but its index %s lists %d%s: give the index written with this .rec "
                        "(im2rec writes both)" % (rec, len(starts), idx, len(offsets),
                                                  "" if len(starts) != len(offsets) else ", not all of them"))


def _scan(rec, num_classes, stop):
    """(number of records, [(offset, report)] of the records whose image bytes no decoder recognises); with
    ``stop`` the first such record raises. Labels outside [0, num_classes) always raise."""
    offsets, size = index_offsets(rec)
    idx = rec_paths(rec)[1]
    bad = []
    for offset, header, label, image in record_heads(rec, offsets, size, idx):
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
