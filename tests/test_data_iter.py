"""Validation, 10-crop and sharded training iterators on real packed photographs, and the input checks.
Pixels are compared with an independent OpenCV computation; records are identified by unique labels."""
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from dpn_mxnet.packing import pack_split
from dpn_mxnet.sample_photos import NAMES
from dpn_mxnet import cli, data
from dpn_mxnet.data import image_record_iter, records, training

from datasets import photo

NUM_IDS = 23
MEAN = np.float32(data.MEAN_RGB).reshape(3, 1, 1)


@pytest.fixture(scope="module")
def ids_rec(tmp_path_factory):
    """23 thumbnails of real photographs, record i labelled i. Record 0 is a 64x48 PNG whose 16 left columns
    are black and 16 right columns white."""
    folder = tmp_path_factory.mktemp("ids_images")
    items = []
    for i in range(NUM_IDS):
        image = photo(NAMES[i % len(NAMES)])
        size = (64, 48) if i % 2 == 0 else (40 + i, 72)
        name = "%02d.%s" % (i, "png" if i == 0 else "jpg")
        image = image.resize(size, Image.BICUBIC)
        if i == 0:
            pixels = np.array(image)
            pixels[:, :16], pixels[:, -16:] = 0, 255
            image = Image.fromarray(pixels)
        image.save(folder / name)
        items.append((name, i))
    return pack_split("ids", folder, items, tmp_path_factory.mktemp("ids_rec"), NUM_IDS, threads=2)


def delivered(batches):
    """Labels of the real (non-padding) rows of every batch of one pass, and the number of batches."""
    labels, count = [], 0
    for batch in batches:
        rows = batch.label[0].asnumpy()
        labels += rows[:len(rows) - batch.pad].astype(int).tolist()
        count += 1
    return labels, count


@pytest.mark.parametrize("batch_size", [1, 5, 23, 30])
def test_val_iter_delivers_every_record_once_per_pass(ids_rec, batch_size):
    batches = data.val_iter(ids_rec, batch_size, 32, threads=2)
    for _ in range(3):  # repeated passes start again at the first record
        batches.reset()
        labels, count = delivered(batches)
        assert labels == list(range(NUM_IDS)) and count == -(-NUM_IDS // batch_size)
    batches.reset()
    last = list(batches)[-1]
    assert last.pad == -NUM_IDS % batch_size
    real = batch_size - last.pad
    rows = last.data[0].asnumpy()
    for row in range(real, batch_size):  # padding rows repeat real rows, no stale data
        np.testing.assert_array_equal(rows[row], rows[(row - real) % real])


def centre_crop(encoded, size, resize):
    """Independent reference: OpenCV decode, short side to ``resize`` (bicubic), centre size x size, normalised."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    rows, cols = image.shape[:2]
    new = (resize, resize * rows // cols) if rows > cols else (resize * cols // rows, resize)
    image = cv2.resize(image, new, interpolation=cv2.INTER_CUBIC)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image, (top, left), (image.transpose(2, 0, 1).astype(np.float32) - MEAN) * np.float32(data.SCALE)


@pytest.mark.parametrize("size, resize", [(64, None), (56, 64)])
def test_val_iter_is_the_centred_crop_of_the_short_side_resize(photo_rec, size, resize):
    reader = mx.recordio.MXIndexedRecordIO(str(photo_rec.val.with_suffix(".idx")), str(photo_rec.val), "r")
    encoded = [mx.recordio.unpack(reader.read_idx(key))[1] for key in reader.keys]
    batches = data.val_iter(photo_rec.val, 4, size, threads=2, resize=resize)
    first = np.concatenate([b.data[0].asnumpy()[:4 - b.pad] for b in batches])
    batches.reset()
    np.testing.assert_array_equal(first, np.concatenate([b.data[0].asnumpy()[:4 - b.pad] for b in batches]))
    assert len(first) == len(encoded)
    for got, buffer in zip(first, encoded):
        _, (top, left), full = centre_crop(buffer, size, resize or size)
        errors = {}
        for dy in (-2, 0, 2):
            for dx in (-2, 0, 2):
                y, x = top + dy, left + dx
                if 0 <= y <= full.shape[1] - size and 0 <= x <= full.shape[2] - size:
                    errors[dy, dx] = np.abs(full[:, y:y + size, x:x + size] - got).mean() / data.SCALE
        assert errors[0, 0] < 1.0, "more than one grey level from the reference"
        assert min(errors, key=errors.get) == (0, 0), "the crop is centred"


def test_normalisation_is_exact(ids_rec):
    batch = data.val_iter(ids_rec, 1, 48).next()  # record 0: 64x48, centre crop starts at column 8
    assert batch.label[0].asnumpy()[0] == 0
    pixels = batch.data[0].asnumpy()[0]
    scale = np.float32(0.0167)  # the authors' protocol (README), written out rather than read from train.data
    for channel, mean in enumerate((124, 117, 104)):
        np.testing.assert_array_equal(pixels[channel, :, :8], (np.float32(0) - mean) * scale)  # black
        np.testing.assert_array_equal(pixels[channel, :, -8:], (np.float32(255) - mean) * scale)  # white


def test_ten_crop_iter_gives_centre_and_corner_crops_and_their_mirrors(photo_rec):
    reader = mx.recordio.MXIndexedRecordIO(str(photo_rec.val.with_suffix(".idx")), str(photo_rec.val), "r")
    records = [mx.recordio.unpack(reader.read_idx(key)) for key in reader.keys]
    batches = data.ten_crop_iter(photo_rec.val, 4, 48, 56)
    crops, labels, pads = [], [], []
    for batch in batches:
        assert batch.data[0].shape == (40, 3, 48, 48) and batch.label[0].shape == (40,)
        real = 40 - batch.pad
        crops.append(batch.data[0].asnumpy()[:real])
        labels.append(batch.label[0].asnumpy()[:real])
        pads.append(batch.pad)
    assert pads == [0] * (len(pads) - 1) + [10 * (-len(records) % 4)]
    crops, labels = np.concatenate(crops).reshape(-1, 10, 3, 48, 48), np.concatenate(labels).reshape(-1, 10)
    assert len(crops) == len(records)
    for got, label, (header, encoded) in zip(crops, labels, records):
        assert (label == header.label).all()
        _, (top, left), full = centre_crop(encoded, 48, 56)
        rows, cols = full.shape[1:]
        windows = [(top, left), (0, 0), (rows - 48, 0), (0, cols - 48), (rows - 48, cols - 48)]
        for k, (y, x) in enumerate(windows):
            assert np.abs(got[k] - full[:, y:y + 48, x:x + 48]).mean() < data.SCALE
            np.testing.assert_array_equal(got[k + 5], got[k][:, :, ::-1])


@pytest.mark.parametrize("num_parts", [1, 2, 3, 4])
def test_shards_cover_the_records_exactly_once(ids_rec, num_parts):
    seen = []
    for part in range(num_parts):
        labels, _ = delivered(training.train_iter(ids_rec, 2, 32, num_parts=num_parts, part_index=part, threads=1))
        assert len(labels) == len(set(labels)) == training.shard_sizes(NUM_IDS, num_parts)[part]
        seen += labels
    assert sorted(seen) == list(range(NUM_IDS))


@pytest.mark.parametrize("aug", cli.AUGMENTATIONS)
def test_every_worker_runs_the_same_number_of_batches(ids_rec, aug):
    per_epoch = training.batches_per_epoch(data.num_records(ids_rec), 3, 2)
    assert per_epoch == 4  # floor(23 / 3) = 7 records in 2s, rounded up
    step = -(-NUM_IDS // 3)  # part p holds records [p * step, (p + 1) * step)
    for part in range(3):
        batches = training.train_iter(ids_rec, 2, 32, num_parts=3, part_index=part, batches_per_epoch=per_epoch,
                                      threads=1, aug=aug)
        for _ in range(3):
            batches.reset()
            labels = [batch.label[0].asnumpy() for batch in batches]
            assert len(labels) == per_epoch  # a short part wraps around, a long one stops early
            assert all(part * step <= label < (part + 1) * step for label in np.concatenate(labels))


def test_iterators_reject_bad_options(ids_rec):
    with pytest.raises(data.DataError, match="part of 0 records"):  # ceil(23 / 7) = 4 per part leaves none
        training.train_iter(ids_rec, 2, 32, num_parts=7, part_index=6)
    with pytest.raises(data.DataError, match="fewer than the batch of 16"):
        training.train_iter(ids_rec, 16, 32, num_parts=2, part_index=0)
    with pytest.raises(data.DataError, match="min_area <= max_area"):
        training.train_iter(ids_rec, 2, 32, min_area=0.5, max_area=0.2)
    with pytest.raises(data.DataError, match="aug must be one of"):
        training.train_iter(ids_rec, 2, 32, aug="torch")
    with pytest.raises(data.DataError, match="resize"):
        data.val_iter(ids_rec, 2, 64, resize=32)


def test_record_iter_refuses_parameters_it_would_ignore(ids_rec):
    with pytest.raises(data.DataError, match="no parameter 'rand_mirorr' \\(did you mean 'rand_mirror'\\?\\)"):
        image_record_iter.record_iter(path_imgrec=str(ids_rec), data_shape=(3, 32, 32), batch_size=2, rand_mirorr=True)
    with pytest.raises(data.DataError, match="ImageRecordIter.*Cannot find any files"):
        image_record_iter.record_iter(path_imgrec=str(ids_rec) + ".missing", data_shape=(3, 32, 32), batch_size=2)


def corrupted(ids_rec, tmp_path, how):
    rec, idx = tmp_path / "bad.rec", tmp_path / "bad.idx"
    shutil.copy(ids_rec, rec)
    shutil.copy(ids_rec.with_suffix(".idx"), idx)
    if how == "missing rec":
        rec.unlink()
    elif how == "missing idx":
        idx.unlink()
    elif how == "empty idx":
        idx.write_text("")
    elif how == "truncated rec":
        rec.write_bytes(rec.read_bytes()[:-600])
    elif how == "shifted idx":
        lines = [line.split() for line in open(ids_rec.with_suffix(".idx"))]
        idx.write_text("".join("%s\t%d\n" % (key, int(offset) + 4) for key, offset in lines))
    return rec


@pytest.mark.parametrize("how, message", [
    ("missing rec", "bad.rec: no such record file"),
    ("missing idx", "bad.idx: no such index file"),
    ("empty idx", "bad.idx: empty list"),
    ("truncated rec", "bad.rec: truncated"),
    ("shifted idx", "bad.rec: corrupt: no record starts at byte"),
])
def test_bad_record_files_give_one_line_errors(ids_rec, tmp_path, how, message):
    rec = corrupted(ids_rec, tmp_path, how)
    for check in (lambda: data.check_rec(rec, NUM_IDS), lambda: data.val_iter(rec, 2, 32),
                  lambda: training.train_iter(rec, 2, 32)):
        with pytest.raises(data.DataError, match=message) as error:
            check()
        assert "\n" not in str(error.value)


def test_check_rec_finds_labels_beyond_the_classes(ids_rec):
    assert data.check_rec(ids_rec, NUM_IDS) == NUM_IDS
    assert records.read_labels(ids_rec) == list(range(NUM_IDS))
    expected = r"ids.rec: record id 10 .* has label 10, expected an integer in \[0, 10\)"
    with pytest.raises(data.DataError, match=expected):
        data.check_rec(ids_rec, 10)


def test_odd_images_are_read_as_three_channels(photo_rec):
    batches = data.val_iter(photo_rec.val, 5, 64)
    names = [line.rstrip("\n").split("\t")[-1] for line in open(photo_rec.out / "val.lst")]
    images = np.concatenate([b.data[0].asnumpy()[:5 - b.pad] for b in batches])
    for name, image in zip(names, images):
        rgb = np.round(image / data.SCALE + MEAN)
        equal = np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2])
        assert equal == name.endswith("grey.JPEG"), name  # only the greyscale JPEG has equal channels
    for aug in cli.AUGMENTATIONS:
        for batch in training.train_iter(photo_rec.train, 8, 224, threads=1, aug=aug, batches_per_epoch=4):
            pixels = batch.data[0].asnumpy()
            assert pixels.shape == (8, 3, 224, 224) and np.isfinite(pixels).all()
            assert pixels.min() >= -124 * data.SCALE - 1e-5 and pixels.max() <= (255 - 104) * data.SCALE + 1e-5
