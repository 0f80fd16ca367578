"""The aug="fork" pipeline (dpn_mxnet/fork_pipeline.py, through training_data.train_iter) against the straightforward
implementation in tests/fork_reference.py, on the packed photographs (JPEGs of several sizes, greyscale, CMYK, PNG
data, a 20x15 image): equal batches bit for bit across passes and padding, whatever the number of threads; batches
that stay intact while later ones are made; JPEG decoding equal to OpenCV's; RecordIO records split in parts."""
import re

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from dpn_mxnet import data, fork_pipeline, training_data

from datasets import photo, run_tool
from fork_reference import ThreadedRecordIter

BATCH = 8


def arrays(batches, passes=2):
    """(data, label, pad) of every batch of ``passes`` passes, as numpy."""
    found = []
    for number in range(passes):
        if number:
            batches.reset()
        found += [(b.data[0].asnumpy(), b.label[0].asnumpy(), b.pad) for b in batches]
    return found


def reference_batches(rec, size, seed, hsl=data.HSL, passes=2):
    """The reference's batches of the passes of epochs 0, 1, ... (part 0 of 1), as ``arrays``."""
    reference = ThreadedRecordIter(rec, data.keys_in_file_order(rec), data.ForkAugmenter(size, hsl=hsl), BATCH,
                                   size, 1)
    found = []
    for epoch in range(passes):
        reference.start(data.pass_key(seed, 0, epoch))
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
        got = arrays(training_data.train_iter(photo_rec.train, BATCH, size, threads=threads, seed=seed, aug="fork"))
        assert len(got) == len(expected)
        for number, ((pixels, labels, pad), (ref_pixels, ref_labels, ref_pad)) in enumerate(zip(got, expected)):
            assert pad == ref_pad and np.array_equal(labels, ref_labels), "batch %d" % number
            np.testing.assert_array_equal(pixels, ref_pixels, "batch %d, %d threads" % (number, threads))


def test_batches_without_jitter_or_mirror_equal_the_reference(photo_rec):
    expected = reference_batches(photo_rec.train, 64, 3, hsl=(0, 0, 0))
    got = arrays(training_data.train_iter(photo_rec.train, BATCH, 64, threads=2, seed=3, aug="fork", hsl=(0, 0, 0)))
    for (pixels, labels, _), (ref_pixels, ref_labels, _) in zip(got, expected):
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(pixels, ref_pixels)


def test_a_batch_stays_intact_while_training_holds_it(photo_rec):
    batches = training_data.train_iter(photo_rec.train, BATCH, 64, threads=2, aug="fork")
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
    assert all(fork_pipeline._exif_free_jpeg(buffer) for buffer in records)
    assert [fork_pipeline._exif_free_jpeg(odd[name]) for name in ("exif", "cmyk", "png")] == [False, True, False]
    for buffer in records + list(odd.values()):
        expected = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(fork_pipeline.decode_bgr(buffer), expected)
    assert fork_pipeline.decode_bgr(odd["exif"]).shape[:2] == source.size  # rotated: (rows, cols) = (width, height)
    assert fork_pipeline.decode_bgr(b"\xff\xd8\xff\xe0 not a JPEG") is None


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
    records = fork_pipeline.MappedRecords(rec)
    assert [bytes(records.read(key)) for key in range(len(payloads))] == payloads


def test_an_undecodable_record_gives_a_one_line_error(tmp_path):
    rec, idx = str(tmp_path / "bad.rec"), str(tmp_path / "bad.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key in range(4):
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, 0, 7 + key, 0), b"\xff\xd8 not an image"))
    writer.close()
    batches = training_data.train_iter(rec, 2, 32, threads=1, aug="fork")
    with pytest.raises(data.DataError, match=r"^%s: record id \d \(byte \d+\) is not a decodable image$" % rec):
        batches.next()


def test_sample_generators_take_the_state_of_data_sample_rng():
    """(pass key, position) pairs; the keys as ``data.pass_key`` makes them, and longer values."""
    samples = [((0, 0, 0, 0), 0), ((0, 1, 5, 0), 0), ((1, 0, 2, 1), 3), ((2**32 - 1, 2**32, 3, 0), 2**33 + 7),
               ((2**70 + 3, 0, 1, 0), 2**96), ((42,), 10**6)]
    rng = np.random.default_rng(0)
    samples += [(tuple(int(v) for v in rng.integers(0, 2**31, 4)), int(rng.integers(0, 2**31))) for _ in range(200)]
    for key, position in samples:
        state = data.sample_rng(key, position).bit_generator.state["state"]
        assert fork_pipeline.pcg64_state(key, position) == (state["state"], state["inc"]), (key, position)


def test_bench_io_times_both_fork_paths_against_the_limit():
    """The benchmark runs end to end (a tiny run: its figures are not checked, only that each is printed)."""
    out = run_tool("tools/bench_io.py", "--fork", "--threads", "1", "--records", "11", "--batch", "4", "--batches",
                   "2", "--repeats", "1", "--size", "64")
    for label in ("train_iter aug=stock", r"aug=fork reference \(tests/fork_reference.py\)", "train_iter aug=fork"):
        assert re.search(r"^%s, 1 decode thread\(s\): [\d.]+ img/s .* [\d.]+ %% of the limit's, [\d.]+ cores for "
                         r"5600 img/s$" % label, out, re.M), out
    assert re.search(r"^limit: OpenCV .* [\d.]+ img/s, [\d.]+ img/CPU-s$", out, re.M), out
