"""The aug="fork" pipeline (dpn_mxnet/data/pipeline.py, through training.train_iter) against the straightforward
implementation in tools/dev/fork_reference.py, on the packed photographs (JPEGs of several sizes, greyscale, CMYK, PNG
data, a 20x15 image): equal batches bit for bit across passes and padding, whatever the number of threads; batches
that stay intact while later ones are made; JPEG decoding equal to OpenCV's; RecordIO records split in parts."""
import re

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from dpn_mxnet import data
from dpn_mxnet.data import decode, draws, pipeline, spec, training
from dpn_mxnet.data.records import MappedRecords

from datasets import photo, run_tool
from tools.dev.fork_reference import ThreadedRecordIter, draw, sample_rng

BATCH = 8


def arrays(batches, passes=2):
    """(data, label, pad) of every batch of ``passes`` passes, as numpy."""
    found = []
    for number in range(passes):
        if number:
            batches.reset()
        found += [(b.data[0].asnumpy(), b.label[0].asnumpy(), b.pad) for b in batches]
    return found


def reference_batches(rec, size, seed, hsl=spec.HSL, passes=2):
    """The reference's batches of the passes of epochs 0, 1, ... (part 0 of 1), as ``arrays``."""
    reference = ThreadedRecordIter(rec, data.keys_in_file_order(rec), spec.Augmentation(size, hsl=hsl), BATCH,
                                   size, 1)
    found = []
    for epoch in range(passes):
        reference.start(draws.pass_key(seed, 0, epoch))
        found += [(b.data[0].asnumpy(), b.label[0].asnumpy(), b.pad) for b in reference]
    return found


@pytest.mark.parametrize("seed, size", [(0, 64), (5, 224), (5, 60)])
def test_batches_equal_the_reference_with_one_or_two_threads(photo_rec, seed, size):
    """Size 60 is not a multiple of OpenCV's SIMD width: the jitter then runs in cv2.cvtColor."""
    expected = reference_batches(photo_rec.train, size, seed)
    records = data.num_records(photo_rec.train)
    assert [pad for _, _, pad in expected] == 2 * ([0] * (records // BATCH) + [-records % BATCH])
    assert not np.array_equal(expected[0][1], expected[len(expected) // 2][1]), "the second pass is reshuffled"
    for threads in (1, 2):
        got = arrays(training.train_iter(photo_rec.train, BATCH, size, threads=threads, seed=seed, aug="fork"))
        assert len(got) == len(expected)
        for number, ((pixels, labels, pad), (ref_pixels, ref_labels, ref_pad)) in enumerate(zip(got, expected)):
            assert pad == ref_pad and np.array_equal(labels, ref_labels), "batch %d" % number
            np.testing.assert_array_equal(pixels, ref_pixels, "batch %d, %d threads" % (number, threads))


def test_batches_without_jitter_or_mirror_equal_the_reference(photo_rec):
    expected = reference_batches(photo_rec.train, 64, 3, hsl=(0, 0, 0))
    got = arrays(training.train_iter(photo_rec.train, BATCH, 64, threads=2, seed=3, aug="fork", hsl=(0, 0, 0)))
    for (pixels, labels, _), (ref_pixels, ref_labels, _) in zip(got, expected):
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(pixels, ref_pixels)


def test_records_that_need_opencv_equal_the_reference(tmp_path):
    """Records stored as they came (no make_rec conversion): an Exif-rotated JPEG, whose header size is not its
    decoded size, and PNG data, which has no JPEG header, get their draws on the worker; a CMYK JPEG is decoded by
    OpenCV; a greyscale and a plain JPEG are decoded by simplejpeg."""
    import io
    source = photo("chelsea.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    images = [(source, "JPEG", dict(exif=exif)), (source.convert("CMYK"), "JPEG", {}), (source, "PNG", {}),
              (source.convert("L"), "JPEG", {}), (source.resize((97, 131)), "JPEG", {})]
    rec, idx = str(tmp_path / "odd.rec"), str(tmp_path / "odd.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key, (image, kind, options) in enumerate(images * 2):
        encoded = io.BytesIO()
        image.save(encoded, kind, **options)
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(key), key, 0), encoded.getvalue()))
    writer.close()
    expected = reference_batches(rec, 64, 11, passes=3)
    got = arrays(training.train_iter(rec, BATCH, 64, threads=2, seed=11, aug="fork"), passes=3)
    assert len(got) == len(expected) == 6
    for (pixels, labels, pad), (ref_pixels, ref_labels, ref_pad) in zip(got, expected):
        assert pad == ref_pad and np.array_equal(labels, ref_labels)
        np.testing.assert_array_equal(pixels, ref_pixels)


def test_batch_memory_is_reused_only_once_released():
    """An array goes out again only when nothing but the pool refers to it: not while MXNet holds the NDArray made
    from it, nor while a view of it (a worker's row) lives."""
    memory = pipeline.BatchMemory((2, 3, 4, 4))
    batch = mx.nd.from_numpy(memory.take())
    row = memory.take()[1]
    assert len(memory) == 2
    memory.take()  # released at once
    assert len(memory) == 3
    first, second, third = (id(array) for array in memory._arrays)
    assert id(memory.take()) == third and len(memory) == 3
    copy = batch.copy()
    del batch
    copy.wait_to_read()
    again = memory.take()
    assert id(again) == first and again.flags.writeable and len(memory) == 3
    del again, row
    held = [memory.take() for _ in range(3)]
    assert [id(array) for array in held] == [first, second, third] and len(memory) == 3


def test_a_batch_stays_intact_while_training_holds_it(photo_rec):
    batches = training.train_iter(photo_rec.train, BATCH, 64, threads=2, aug="fork")
    held = batches.next()
    copy = held.data[0].asnumpy().copy()
    for _ in range(3):  # the next passes' batches are computed while the first is held
        batches.reset()
        for _ in batches:
            pass
    np.testing.assert_array_equal(held.data[0].asnumpy(), copy)


def encoded_records(rec):
    reader = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    return [mx.recordio.unpack(reader.read_idx(key))[1] for key in reader.keys]


def test_decoding_equals_opencv(photo_rec, tmp_path):
    """Every packed record (make_rec packs plain JPEGs: libjpeg-turbo through simplejpeg), and the files that need
    OpenCV: a JPEG with an Exif orientation (OpenCV rotates it), a CMYK JPEG, PNG data, damaged data."""
    import cv2
    source = photo("chelsea.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    odd = {"exif": (source, "JPEG", dict(exif=exif)), "cmyk": (source.convert("CMYK"), "JPEG", {}),
           "png": (source, "PNG", {})}
    for name, (image, kind, options) in odd.items():
        image.save(tmp_path / name, kind, **options)
        odd[name] = (tmp_path / name).read_bytes()
    records = encoded_records(photo_rec.train) + encoded_records(photo_rec.val)
    assert all(decode.exif_free_jpeg(buffer) for buffer in records)
    assert [decode.exif_free_jpeg(odd[name]) for name in ("exif", "cmyk", "png")] == [False, True, False]
    for buffer in records + list(odd.values()):
        expected = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decode.decode_bgr(buffer), expected)
    assert decode.decode_bgr(odd["exif"]).shape[:2] == source.size  # rotated: (rows, cols) = (width, height)
    assert decode.decode_bgr(b"\xff\xd8\xff\xe0 not a JPEG") is None


def test_records_split_by_recordio_are_joined(tmp_path):
    """dmlc's writer splits a record where its bytes hold the RecordIO magic number at a multiple of 4."""
    magic = (0xCED7230A).to_bytes(4, "little")
    payloads = [b"plain record", b"abcd" + magic + b"efgh", magic + b"x" * 5 + magic + magic, b"tail"]
    rec, idx = str(tmp_path / "split.rec"), str(tmp_path / "split.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key, payload in enumerate(payloads):
        writer.write_idx(key, payload)
    writer.close()
    with open(rec, "rb") as stream:
        stream.seek(writer.idx[1])
        assert int.from_bytes(stream.read(8)[4:], "little") >> 29 == 1, "record 1 is stored in parts"
    records = MappedRecords(rec)
    assert [bytes(records.read(key)) for key in range(len(payloads))] == payloads


def test_an_undecodable_record_gives_a_one_line_error(tmp_path):
    rec, idx = str(tmp_path / "bad.rec"), str(tmp_path / "bad.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key in range(4):
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, 0, 7 + key, 0), b"\xff\xd8 not an image"))
    writer.close()
    batches = training.train_iter(rec, 2, 32, threads=1, aug="fork")
    with pytest.raises(data.DataError, match=r"^%s: record id \d \(byte \d+\) is not a decodable image$" % rec):
        batches.next()


@pytest.mark.parametrize("augmentation", [spec.Augmentation(224), spec.Augmentation(64, hsl=(0, 0, 0)),
                                          spec.Augmentation(32, 1, 1, (1, 1), (180, 255, 255), mirror=False),
                                          spec.Augmentation(299, 0.5, 0.9, (0.5, 2.0), (5, 0, 0))],
                         ids=["defaults", "no-jitter", "whole-image", "other-ranges"])
def test_compiled_draws_equal_numpys_generator(augmentation):
    """draws repeats SeedSequence, PCG64 and Generator.random/uniform/integers: its draws equal the plain
    Python ones (tools/dev/fork_reference.py) from np.random.default_rng([*key, position]), for keys as
    draws.pass_key makes them and longer values, and images from 1 x 1 to 2000 x 2000 pixels."""
    rng = np.random.default_rng(7)
    keys = [(0, 0, 0, 0), (1, 0, 2, 1), (2**32 - 1, 2**32, 3, 0), (2**70 + 3, 0, 1, 0), (42,)]
    keys += [tuple(int(v) for v in rng.integers(0, 2**31, 4)) for _ in range(95)]
    for key in keys:
        positions = [int(p) for p in rng.integers(0, 2**20, 14)] + [0, 2**33 + 5, 2**96]
        shapes = [(1, 1)] + [(int(r), int(c)) for r, c in rng.integers(1, 2000, (16, 2))]
        for position, shape, got in zip(positions, shapes, draws.sample_draws(augmentation, key, positions, shapes)):
            window, offsets, mirror = draw(augmentation, *shape, sample_rng(key, position))
            assert got == (tuple(int(v) for v in window), offsets, mirror), (key, position, shape)


def test_bench_io_times_both_fork_paths_against_the_limit():
    """The benchmark runs end to end (a tiny run: its figures are not checked, only that each is printed)."""
    out = run_tool("tools/dev/bench_io.py", "--fork", "--threads", "1", "--records", "11", "--batch", "4", "--batches",
                   "2", "--repeats", "1", "--size", "64")
    for label in ("train_iter aug=stock", r"aug=fork reference \(tools/dev/fork_reference.py\)", "train_iter aug=fork"):
        assert re.search(r"^%s, 1 decode thread\(s\): [\d.]+ img/s .* [\d.]+ %% of the limit's, [\d.]+ cores for "
                         r"5600 img/s$" % label, out, re.M), out
    assert re.search(r"^limit: OpenCV .* [\d.]+ img/s, [\d.]+ img/CPU-s$", out, re.M), out
