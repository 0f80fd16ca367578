"""The .rec/.idx files that im2rec (tools/make_rec.py) writes: their paths, the RecordIO format checked record head
by record head, counts, keys and labels read without decoding, records read from a memory map, and the one-line
report of an undecodable record."""
import mmap
import os
import struct

import mxnet as mx

from ..checks import DataError
from .signatures import SIGNATURE_BYTES

_RECORD_MAGIC = 0xCED7230A
_RECORD_HEAD = struct.Struct("<II")  # magic, (continue flag << 29) | length
_MAGIC_BYTES = struct.pack("<I", _RECORD_MAGIC)


def rec_paths(rec):
    """(``x.rec``, ``x.idx``) for ``x.rec``, checking that both exist."""
    rec = os.fspath(rec)
    idx = os.path.splitext(rec)[0] + ".idx"
    if not os.path.isfile(rec):
        raise DataError("%s: no such record file" % rec)
    if not os.path.isfile(idx):
        raise DataError("%s: no such index file (im2rec writes it beside %s)" % (idx, os.path.basename(rec)))
    return rec, idx


def index_offsets(rec):
    """(record offsets from the .idx, sorted as MXNet reads them; size of the .rec in bytes), after checking that
    the index lists records, that the .rec is a RecordIO file and that its first and last records lie inside it."""
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
    return len(index_offsets(rec)[0])


def record_starts(rec, size):
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


def record_heads(rec, offsets, size, idx):
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
    offsets, size = index_offsets(rec)
    return [label for _, _, label, _ in record_heads(rec, offsets, size, rec_paths(rec)[1])]


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


class MappedRecords:
    """Records of an indexed .rec by key, read from a read-only memory map: no file position, so no lock."""

    def __init__(self, rec):
        rec, idx = rec_paths(rec)
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
            if offset + _RECORD_HEAD.size > len(self._view):
                raise DataError("%s: truncated: record %s ends after the end of the file" % (self._rec, key))
            magic, head = _RECORD_HEAD.unpack_from(self._view, offset)
            length, flag = head & ((1 << 29) - 1), head >> 29
            if magic != _RECORD_MAGIC or offset + _RECORD_HEAD.size + length > len(self._view):
                raise DataError("%s: corrupt: record %s at byte %d is not a whole record" % (self._rec, key, offset))
            parts.append(self._view[offset + _RECORD_HEAD.size:offset + _RECORD_HEAD.size + length])
            if flag in (0, 3):
                return parts[0] if len(parts) == 1 else _MAGIC_BYTES.join(parts)
            offset += _RECORD_HEAD.size + (-length % 4) + length
