"""Your own images, as a user types the commands: a folder of class folders (with the odd files of real photo
collections) packed with a stratified split, a DPN trained on it without --num-classes, its class names in
predict's output and the ONNX file, score at the training size, predict's mean-max against score's, the top-k
count, and the README's fine-tuning recipe against the same budget from scratch."""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from dpn_mxnet.evaluation import top_k, topk_hits

from conftest import REPO

TINY = json.dumps({"stem_filters": 16, "stem_kernel": 3, "k_r": 32, "groups": 8, "k_sec": [1, 1, 1],
                   "inc_sec": [16, 16, 16], "bw_base": 32})
SHAPES = ("circle", "cross", "square", "stripes")
PER_CLASS = 12
# the odd files of a real collection, all in circle/: name -> what make_rec says of it (None: packed as it is)
ODD = {"plain.png": None, "grey.jpg": "greyscale", "upper.JPG": None, "cmyk.jpg": "CMYK JPEG",
       "rgba.png": "mode RGBA", "png_inside.jpg": "PNG data in a .jpg file"}
# the README's fine-tuning flags ("Fine-tune on your own images"), for a batch of 16
RECIPE = ["--lr", 0.02, "--num-epochs", 6, "--lr-steps", 5, "--warmup-epochs", 1, "--min-area", 0.5]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ok(*args, timeout=600):
    done = run(*args, timeout=timeout)
    assert done.returncode == 0, "%s\n%s%s" % (" ".join(map(str, args)), done.stdout, done.stderr)
    return done


def drawing(shape, rng, size=64):
    """A BGR picture of ``shape`` at a random place, in random colours."""
    import cv2
    image = np.full((size, size, 3), rng.randint(150, 256, 3), np.uint8)
    colour = tuple(int(c) for c in rng.randint(0, 100, 3))
    x, y, r = rng.randint(20, 44), rng.randint(20, 44), rng.randint(10, 18)
    if shape == "circle":
        cv2.circle(image, (x, y), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(image, (x - r, y - r), (x + r, y + r), colour, -1)
    elif shape == "cross":
        cv2.line(image, (x - r, y - r), (x + r, y + r), colour, 4)
        cv2.line(image, (x - r, y + r), (x + r, y - r), colour, 4)
    else:
        for row in range(rng.randint(0, 6), size, 10):
            cv2.line(image, (0, row), (size, row), colour, 4)
    return image


def write_folder(root, seed=0):
    """ROOT/<shape>/*.jpg, and the odd files in ROOT/circle/."""
    import cv2
    from PIL import Image
    rng = np.random.RandomState(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for number in range(PER_CLASS):
            cv2.imwrite(str(root / shape / ("%02d.jpg" % number)), drawing(shape, rng))
    circle = root / "circle"
    cv2.imwrite(str(circle / "plain.png"), drawing("circle", rng))
    cv2.imwrite(str(circle / "grey.jpg"), cv2.cvtColor(drawing("circle", rng), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(circle / "upper.JPG"), drawing("circle", rng))
    Image.fromarray(drawing("circle", rng)[:, :, ::-1]).convert("CMYK").save(circle / "cmyk.jpg", "JPEG")
    cv2.imwrite(str(circle / "rgba.png"), cv2.cvtColor(drawing("circle", rng), cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(circle / "png_inside.png"), drawing("circle", rng))
    (circle / "png_inside.png").rename(circle / "png_inside.jpg")
    return root


def lst(path):
    """[(label, file)] of an im2rec .lst, in record order."""
    return [(int(label), name) for _, label, name in (line.split("\t") for line in path.read_text().splitlines())]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The folder of class folders, packed by make_rec with a quarter of each class for validation."""
    root = tmp_path_factory.mktemp("own")
    folder = write_folder(root / "my_photos")
    done = ok("tools/make_rec.py", folder, root / "rec", "--val-fraction", 0.25, "--seed", 3, "--num-thread", 2)
    return root, folder, root / "rec", done.stdout


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """A tiny DPN trained on the packed folder, the class count left to the data."""
    _, _, rec, _ = shapes
    prefix = tmp_path_factory.mktemp("own_ckpt") / "shapes"
    done = ok("train/train_imagenet.py", "--network", TINY, "--size", 32, "--data-train", rec / "train.rec",
              "--data-val", rec / "val.rec", "--model-prefix", prefix, "--batch-size", 8, "--num-epochs", 2,
              "--lr", 0.05, "--lr-steps", "", "--disp-batches", 2)
    return prefix, done.stdout


def test_a_plain_folder_is_packed_with_a_stratified_split_and_its_odd_files_converted(shapes):
    root, folder, rec, log = shapes
    assert (rec / "classes.txt").read_text().split() == list(SHAPES)  # from the folder names, in sorted order
    train, val = lst(rec / "train.lst"), lst(rec / "val.lst")
    images = {label: sorted(p.name for p in (folder / shape).iterdir()) for label, shape in enumerate(SHAPES)}
    for label, names in images.items():
        drawn = [name for split in (train, val) for lab, name in split if lab == label]
        assert sorted(pathlib.Path(name).name.replace(".jpg.jpg", ".jpg").replace(".png.jpg", ".png")
                      for name in drawn) == names  # every image once, in one split only
        assert sum(lab == label for lab, _ in val) == round(0.25 * len(names))
    for name, reason in ODD.items():
        if reason and reason != "greyscale":
            assert "train: circle/%s: %s" % (name, reason) in log or "val: circle/%s: %s" % (name, reason) in log
    assert "noted" not in log and "re-encoded as RGB JPEG" in log
    for split in ("train", "val"):
        summary = subprocess.run([sys.executable, "-c", "from dpn_mxnet import data; print(data.check_rec(%r, 4))"
                                  % str(rec / (split + ".rec"))], capture_output=True, text=True, cwd=REPO)
        assert int(summary.stdout) == len(lst(rec / (split + ".lst")))


def test_the_split_is_reproduced_from_the_same_seed(shapes, tmp_path):
    root, folder, rec, _ = shapes
    ok("tools/make_rec.py", folder, tmp_path / "again", "--val-fraction", 0.25, "--seed", 3, "--num-thread", 2)
    ok("tools/make_rec.py", folder, tmp_path / "other", "--val-fraction", 0.25, "--seed", 4, "--num-thread", 2)

    def val_files(out):
        return sorted(pathlib.Path(name).name for _, name in lst(out / "val.lst"))
    assert val_files(tmp_path / "again") == val_files(rec)
    assert (tmp_path / "again" / "train.lst").read_text().count("\n") == (rec / "train.lst").read_text().count("\n")
    assert [n for _, n in lst(tmp_path / "again" / "train.lst") if not n.startswith("/")] == \
        [n for _, n in lst(rec / "train.lst") if not n.startswith("/")]  # the same training order too
    assert val_files(tmp_path / "other") != val_files(rec)


def test_a_failed_packing_leaves_nothing_behind(tmp_path):
    folder = write_folder(tmp_path / "photos")
    (folder / "square" / "notes.jpg").write_text("<html>not an image</html>")
    done = run("tools/make_rec.py", folder, tmp_path / "out", "--val-fraction", 0.25, "--num-thread", 1)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "square/notes.jpg" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    # into an existing folder: what was there stays, nothing of the packing does
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("mine")
    assert run("tools/make_rec.py", folder, tmp_path / "kept", "--num-thread", 1).returncode == 2
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["mine.txt"]
    # ImageNet's class index asked for, folders that are not its classes: one line with the way out
    done = run("tools/make_rec.py", folder, tmp_path / "out", "--classes", REPO / "data_lists" /
               "imagenet1k_classes.txt")
    assert done.returncode == 2 and "--classes auto" in done.stderr and not (tmp_path / "out").exists()


def test_training_takes_the_class_count_from_the_data_and_refuses_a_contradiction(shapes, trained, tmp_path):
    _, _, rec, _ = shapes
    prefix, log = trained
    info = json.loads(pathlib.Path(str(prefix) + "-model.json").read_text())
    assert info["num_classes"] == 4 and [name for _, name in info["classes"]] == list(SHAPES)
    epochs = [line for line in log.splitlines() if "Epoch[" in line or "epoch-summary" in line]
    assert "Epoch[1]" in epochs[0] and '"epoch": 1' in [e for e in epochs if "epoch-summary" in e][0]  # from 1
    assert "train_top4" in log and "val_top4_error" in log  # top-k with k = 4 classes, and it says so
    done = run("train/train_imagenet.py", "--network", TINY, "--size", 32, "--data-train", rec / "train.rec",
               "--num-classes", 5, "--model-prefix", tmp_path / "refused", "--num-epochs", 1)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--num-classes 5 contradicts %s (4 classes)" % (rec / "classes.txt") in done.stderr
    # no class list beside the .rec: the labels give the count (largest label + 1), a smaller one is refused
    bare = tmp_path / "bare"
    bare.mkdir()
    for suffix in (".rec", ".idx"):
        shutil.copy(rec / ("train" + suffix), bare / ("train" + suffix))
    done = run("train/train_imagenet.py", "--network", TINY, "--size", 32, "--data-train", bare / "train.rec",
               "--num-classes", 3, "--model-prefix", tmp_path / "refused", "--num-epochs", 1)
    assert done.returncode == 2 and "--num-classes 3 contradicts the labels of %s (4 classes)" % (
        bare / "train.rec") in done.stderr


def test_predict_names_each_class_once_and_export_carries_the_names(shapes, trained, tmp_path):
    _, folder, _, _ = shapes
    prefix, _ = trained
    image = folder / "stripes" / "00.jpg"
    done = ok("tools/predict.py", "--model-prefix", prefix, "--load-epoch", 2, "--top", 4, image)
    line, = done.stdout.splitlines()
    named = [entry.split(" ", 1)[1] for entry in line.split(": ", 1)[1].split("; ")]
    assert sorted(named) == sorted(SHAPES)  # each name once: no "(stripes)" after "stripes", no class numbers
    import onnx
    ok("tools/export_onnx.py", "--model-prefix", prefix, "--load-epoch", 2, "-o", tmp_path / "shapes.onnx",
       "--no-check")
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "shapes.onnx")).metadata_props}
    assert json.loads(metadata["classes"]) == list(SHAPES)


def test_score_defaults_to_the_training_size_and_names_its_k(shapes, trained):
    _, _, rec, _ = shapes
    prefix, _ = trained
    done = ok("test/score.py", "--model-prefix", prefix, "--load-epoch", 2, "--data-val", rec / "val.rec")
    assert "at 32x32 (the checkpoint's training size)" in done.stderr
    header, _, row = done.stdout.splitlines()
    assert "top-4 err" in header and "| 32 |" in row
    row = json.loads(ok("test/score.py", "--model-prefix", prefix, "--load-epoch", 2, "--data-val",
                        rec / "val.rec", "--json", "--size", 40).stdout)
    assert row["size"] == 40 and row["k"] == 4 and "top4_error" in row and "top5_error" not in row


def score_probabilities(arguments):
    """The class probabilities that test/score.py computes for every record, in file order (its own build)."""
    spec = importlib.util.spec_from_file_location("score_entry", REPO / "test" / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    args = score.parse_args(list(map(str, arguments)))
    with tempfile.TemporaryDirectory() as scratch:
        module, _, batches, _, _, _, _ = score.build(args, scratch)
        rows = []
        batches.reset()
        for batch in batches:
            module.forward(batch, is_train=False)
            rows.append(module.get_outputs()[0].asnumpy()[:batch.data[0].shape[0] - batch.pad])
    return np.concatenate(rows)


def test_predict_meanmax_equals_score_meanmax(shapes, trained):
    _, folder, rec, _ = shapes
    prefix, _ = trained
    files = [name if name.startswith("/") else str(folder / name) for _, name in lst(rec / "val.lst")]
    done = ok("tools/predict.py", "--model-prefix", prefix, "--load-epoch", 2, "--meanmax", "--size", 48, "--top", 4,
              "--json", *files)
    predicted = [json.loads(line) for line in done.stdout.splitlines()]
    expected = score_probabilities(["--model-prefix", prefix, "--load-epoch", 2, "--data-val", rec / "val.rec",
                                    "--meanmax", "--size", 48, "--batch-size", 4])
    plain = score_probabilities(["--model-prefix", prefix, "--load-epoch", 2, "--data-val", rec / "val.rec",
                                 "--size", 48, "--batch-size", 4])
    assert len(predicted) == len(expected) == len(files)
    names = list(SHAPES)
    got = np.zeros_like(expected)
    for row, result in zip(got, predicted):
        for entry in result["top"]:
            row[names.index(entry["name"])] = entry["probability"]
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.abs(plain - expected).max() > 1e-3  # mean-max is not the plain average pooling


def test_top_k_counts_the_label_at_rank_k_and_not_at_rank_k_plus_one():
    probabilities = np.array([[0.30, 0.25, 0.15, 0.12, 0.10, 0.05, 0.03]] * 2)  # classes ranked 0, 1, ..., 6
    k = top_k(7)
    assert k == 5 and top_k(4) == 4
    hits1, hitsk = topk_hits(probabilities, np.array([k - 1, k]), k)  # rank k (a hit), rank k + 1 (a miss)
    assert (hits1, hitsk) == (0, 1)
    assert topk_hits(probabilities[:, :4], np.array([3, 0]), top_k(4)) == (1, 2)


def test_the_fine_tuning_recipe_beats_the_same_budget_from_scratch(tmp_path):
    """A tiny DPN trained on digits 0-4, fine-tuned on a few scans of digits 5-9 with the README's flags, against
    the same run without --pretrained."""
    ok("tools/make_digits.py", tmp_path / "digits", "--num-thread", 1)
    for name, digits in (("first", range(5)), ("second", range(5, 10))):
        for digit in digits:
            target = tmp_path / name / str(digit)
            target.mkdir(parents=True)
            for split in ("train", "val"):
                for scan in (tmp_path / "digits" / "images" / split / str(digit)).iterdir():
                    shutil.copy(scan, target / scan.name)
    ok("tools/make_rec.py", tmp_path / "first", tmp_path / "first_rec", "--val-fraction", 0.2, "--num-thread", 1)
    ok("tools/make_rec.py", tmp_path / "second", tmp_path / "second_rec", "--val-fraction", 0.9, "--num-thread", 1)
    common = ["train/train_imagenet.py", "--network", TINY, "--size", 32, "--batch-size", 16, "--no-mirror",
              "--disp-batches", 50]
    ok(*common, "--data-train", tmp_path / "first_rec" / "train.rec", "--model-prefix", tmp_path / "first",
       "--num-epochs", 4, "--lr", 0.1, "--lr-steps", 3, "--min-area", 0.5)
    second = ["--data-train", tmp_path / "second_rec" / "train.rec", "--data-val", tmp_path / "second_rec" /
              "val.rec", *RECIPE]
    tuned = ok(*common, *second, "--model-prefix", tmp_path / "tuned", "--pretrained", "%s-0004.params"
               % (tmp_path / "first")).stdout
    scratch = ok(*common, *second, "--model-prefix", tmp_path / "scratch").stdout

    def last_error(log):
        return [json.loads(line.split("epoch-summary", 1)[1]) for line in log.splitlines()
                if "epoch-summary" in line][-1]["val_top1_error"]
    loaded = re.search(r"initial weights from .*: (\d+) of the network's (\d+) tensors", tuned)
    assert loaded and loaded.group(1) == loaded.group(2) and int(loaded.group(1)) > 0, tuned
    assert last_error(tuned) < 30 and last_error(tuned) < last_error(scratch) - 10, (last_error(tuned),
                                                                                   last_error(scratch))
