"""Packing tools: the ImageNet-1k class index, make_rec on an ImageNet-style photo folder with odd files, and
make_digits. The .rec files are read back independently (raw records, OpenCV) and compared with the sources."""
import pathlib
import re
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from dpn_mxnet import packing
from dpn_mxnet.data import DataError

from conftest import REPO
from datasets import PHOTO_CLASSES, photo, run_tool, write_odd_files

CLASS_INDEX = REPO / "data_lists" / "imagenet1k_classes.txt"


def records(rec):
    """{record id: (label, encoded bytes)} read with MXNet's RecordIO reader."""
    rec = pathlib.Path(rec)
    reader = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    out = {}
    for key in reader.keys:
        header, encoded = mx.recordio.unpack(reader.read_idx(key))
        out[header.id] = (header.label, encoded)
    return out


def lst_rows(lst):
    """[(id, label, path)] of an im2rec list."""
    rows = [line.rstrip("\n").split("\t") for line in open(lst)]
    return [(int(i), float(label), path) for i, label, path in rows]


def test_class_index_is_gluoncv_imagenet1k_in_sorted_wnid_order():
    lines = CLASS_INDEX.read_text().splitlines()
    wnids = [line.split("\t")[0] for line in lines]
    assert len(lines) == 1000 and wnids == sorted(set(wnids))
    assert all(re.fullmatch(r"n\d{8}\t[^\t]+\t[^\t]+", line) for line in lines)
    assert lines[0].startswith("n01440764\ttench") and lines[-1].startswith("n15075141\ttoilet tissue")
    assert "matches" in run_tool("tools/make_class_index.py", "--check")  # the script reproduces the file


def test_make_rec_labels_every_image_from_the_class_index(photo_rec):
    wnids = [line.split("\t")[0] for line in CLASS_INDEX.read_text().splitlines()]
    images = sorted(p.relative_to(photo_rec.data / "train").as_posix()
                    for p in (photo_rec.data / "train").rglob("*.JPEG"))
    rows = lst_rows(photo_rec.out / "train.lst")
    assert len(rows) == len(images) == len(records(photo_rec.train))  # nothing dropped
    listed = {}
    for _, label, path in rows:
        if path.startswith("/"):  # re-encoded copies live under OUT/converted/train/<class>/
            path = pathlib.Path(path).relative_to(photo_rec.out / "converted" / "train").with_suffix("")
        listed[pathlib.Path(path).as_posix()] = label
    assert sorted(listed) == images
    for path, label in listed.items():
        assert label == wnids.index(path.split("/")[0])
    labels = [label for _, label, _ in rows]
    assert labels != sorted(labels), "the training list is shuffled so that contiguous shards mix classes"
    val = lst_rows(photo_rec.out / "val.lst")
    val_txt = dict(line.split() for line in (photo_rec.data / "val.txt").read_text().splitlines())
    for _, label, path in val:
        name = pathlib.Path(path).name
        expected = val_txt[name[:-len(".jpg")] if path.startswith("/") else name]  # converted: <name>.jpg
        assert label == (wnids.index(expected) if expected.startswith("n") else int(expected))


def test_make_rec_keeps_original_bytes_and_converts_only_odd_files(photo_rec):
    packed = records(photo_rec.train)
    report = {line.split("\t")[0]: line.split("\t")[1:] for line in
              (photo_rec.out / "train.report.txt").read_text().splitlines()}
    odd_dir = PHOTO_CLASSES[0]
    assert {name: reason for name, (reason, _) in report.items()} == {
        odd_dir + "/cmyk.JPEG": "CMYK JPEG", odd_dir + "/png_inside.JPEG": "PNG data in a .JPEG file",
        odd_dir + "/grey.JPEG": "greyscale", odd_dir + "/tiny.JPEG": "tiny 20x15"}
    for name in ("cmyk.JPEG", "png_inside.JPEG"):
        assert "train: %s/%s" % (odd_dir, name) in photo_rec.log  # each converted file is named on stdout
    for record_id, _, path in lst_rows(photo_rec.out / "train.lst"):
        encoded = packed[record_id][1]
        if path.startswith("/"):
            assert encoded == pathlib.Path(path).read_bytes() and encoded[:2] == b"\xff\xd8"
        else:
            assert encoded == (photo_rec.data / "train" / path).read_bytes()  # pass-through
    # the converted CMYK file has the photo's colours (as OpenCV decodes the CMYK original)
    original = cv2.imread(str(photo_rec.data / "train" / odd_dir / "cmyk.JPEG"), cv2.IMREAD_COLOR)
    converted = cv2.imread(str(photo_rec.out / "converted" / "train" / odd_dir / "cmyk.JPEG.jpg"), cv2.IMREAD_COLOR)
    reference = np.asarray(photo("coffee.png"))[:, :, ::-1]
    assert converted.shape == original.shape == reference.shape
    assert np.abs(converted.astype(int) - original).mean() < 5  # JPEG generation loss; inverted CMYK gives ~100
    assert np.abs(converted.astype(int) - reference).mean() < 5


def test_val_resize_packs_short_side(photo_rec, tmp_path):
    items = packing.list_label_file(photo_rec.data / "val", photo_rec.data / "val.txt",
                                     packing.read_class_index(CLASS_INDEX))
    rec = packing.pack_split("val", photo_rec.data / "val", items, tmp_path, 1000, threads=2, resize=72)
    for _, encoded in records(rec).values():
        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) == 72


def error_of(*args):
    done = subprocess.run([sys.executable, "tools/make_rec.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_make_rec_cli_reports_bad_input_in_one_line(tmp_path):
    image = photo("rocket.jpg")
    (tmp_path / "data" / "train" / "not_a_wnid").mkdir(parents=True)
    image.save(tmp_path / "data" / "train" / "not_a_wnid" / "a.JPEG")
    message = error_of(tmp_path / "data", tmp_path / "out", "--classes", CLASS_INDEX)
    assert "not_a_wnid" in message and "not a class" in message and "--classes auto" in message
    assert not (tmp_path / "out").exists()  # nothing left behind


@pytest.mark.parametrize("case, expected", [
    ("flat val without labels", "has no class folders: give its label file (--val-labels)"),
    ("unknown image in label file", "image missing.JPEG not found"),
    ("label out of range", "neither a class id of the index nor a label below 1000"),
    ("unreadable image", "unreadable image file"),
    ("empty class folders", "empty list"),
])
def test_make_rec_rejects_bad_input(tmp_path, case, expected):
    data = tmp_path / "data"
    write_odd_files(data / "train" / "n01440764", photo("rocket.jpg"))
    (data / "val").mkdir()
    photo("china.jpg").save(data / "val" / "v1.JPEG")
    labels = data / "val.txt"
    labels.write_text({"unknown image in label file": "missing.JPEG 3\n",
                       "label out of range": "v1.JPEG 1000\n"}.get(case, "v1.JPEG 3\n"))
    if case == "unreadable image":
        (data / "train" / "n01440764" / "broken.JPEG").write_text("<html>not an image</html>")
    if case == "empty class folders":
        for path in (data / "train" / "n01440764").iterdir():
            path.unlink()
    with pytest.raises(DataError, match=re.escape(expected)) as error:
        packing.make_rec(data, tmp_path / "out", CLASS_INDEX, None if case.startswith("flat") else labels,
                          threads=1)
    assert "\n" not in str(error.value)


def test_make_digits_writes_a_stratified_split_of_the_sklearn_scans(digits_rec):
    from sklearn.datasets import load_digits
    digits = load_digits()
    counts = {}
    for split, rec in (("train", digits_rec.train), ("val", digits_rec.val)):
        rows = lst_rows(digits_rec.out / (split + ".lst"))
        packed = records(rec)
        assert len(rows) == len(packed)
        for record_id, label, path in rows:
            digit, index = int(path.split("/")[0]), int(pathlib.Path(path).stem)
            assert label == digit == digits.target[index] == packed[record_id][0]
            image = cv2.imdecode(np.frombuffer(packed[record_id][1], np.uint8), cv2.IMREAD_UNCHANGED)
            expected = cv2.resize(np.uint8(np.round(255 * (1 - digits.images[index] / 16))), (32, 32),
                                  interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(image, expected)  # lossless PNG of the upscaled scan
            counts[split, digit] = counts.get((split, digit), 0) + 1
    assert all(counts["train", d] == 24 and counts["val", d] == 6 for d in range(10))  # 300 = 10 x (24 + 6)
    stamp = digits_rec.train.stat().st_mtime_ns
    run_tool("tools/make_digits.py", digits_rec.out, "--limit", 300)
    assert digits_rec.train.stat().st_mtime_ns == stamp  # the second run reuses the records
