"""tools/predict.py as a user runs it: class probabilities of real photos against the authors' graph fed by NumPy
preprocessing, ImageNet names, batching, and one-line errors for bad input."""
import json
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from dpn_mxnet.packing import IMAGENET_CLASSES
from dpn_mxnet.sample_photos import sample_photo

from conftest import REPO
from in_process import run_script
from test_data_iter import centre_crop

SIZE = 224


def predict(*args, process=False):
    """tools/predict.py run in this process (in_process.py) or, with ``process``, as a process of its own."""
    if not process:
        return run_script("tools/predict.py", *args)
    return subprocess.run([sys.executable, "tools/predict.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real photos as PNG files whose short side is already SIZE (PNG decodes losslessly everywhere)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, (height, width) in (("chelsea.png", (SIZE, 300)), ("coffee.png", (260, SIZE)),
                                  ("astronaut.png", (SIZE, SIZE))):
        image = cv2.imread(str(sample_photo(name)), cv2.IMREAD_COLOR)
        assert image.shape[0] >= height and image.shape[1] >= width
        paths.append(folder / name)
        cv2.imwrite(str(paths[-1]), image[:height, :width])
    return paths


def reference_probabilities(graph, args, aux, paths):
    """The authors' protocol in NumPy (centre SIZE crop, RGB, (pixel - mean) x 0.0167) through their graph."""
    batch = []
    for path in paths:
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32)
        top, left = (rgb.shape[0] - SIZE) // 2, (rgb.shape[1] - SIZE) // 2
        crop = rgb[top:top + SIZE, left:left + SIZE]
        batch.append(((crop - np.array([124, 117, 104], np.float32)) * 0.0167).transpose(2, 0, 1))
    inputs = dict(args, data=mx.nd.array(np.stack(batch)), softmax_label=mx.nd.zeros(len(batch)))
    return graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()


def check_rows(rows, expected, paths, names, atol):
    """Each row lists, best first, the top classes of ``expected`` (up to ties within ``atol``), with their names
    and probabilities."""
    index = {entry[0]: k for k, entry in enumerate(names)}
    assert [row["image"] for row in rows] == [str(p) for p in paths]
    for row, probs in zip(rows, expected):
        classes = [index[entry["class"]] for entry in row["top"]]
        assert [entry["name"] for entry in row["top"]] == [names[k][1] for k in classes]
        got = np.array([entry["probability"] for entry in row["top"]])
        np.testing.assert_allclose(got, probs[classes], rtol=1e-3, atol=atol)
        assert len(classes) == 5 and (np.diff(got) <= 0).all()
        assert probs[classes].min() >= np.sort(probs)[-5] - 2 * atol
    assert len({tuple(entry["class"] for entry in row["top"]) for row in rows}) == len(rows)  # distinct answers


@pytest.mark.parametrize("resize", [None, 256])
def test_photos_of_any_size_are_resized_and_centre_cropped(released, resize):
    """Photos as they come (451x300, 600x400, 512x512): short side resized to --resize (bicubic), centre crop,
    checked against the same steps in OpenCV."""
    prefix, graph, args, aux = released
    paths = [sample_photo(name) for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    crops = []
    for path in paths:
        _, (top, left), full = centre_crop(path.read_bytes(), SIZE, resize or SIZE)
        crops.append(full[:, top:top + SIZE, left:left + SIZE])
    inputs = dict(args, data=mx.nd.array(np.stack(crops)), softmax_label=mx.nd.zeros(len(crops)))
    expected = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()
    done = predict("--model-prefix", prefix, "--json", *paths, *(["--resize", resize] if resize else []))
    assert done.returncode == 0, done.stderr
    names = [line.split("\t") for line in IMAGENET_CLASSES.read_text().splitlines()]
    check_rows([json.loads(line) for line in done.stdout.splitlines()], expected, paths, names, atol=1e-3)


@pytest.mark.parametrize("options", [[], ["--arrangement", "authors"]])
def test_top_classes_match_the_authors_graph(released, photos, options):
    prefix, graph, args, aux = released
    done = predict("--model-prefix", prefix, "--json", "--batch-size", 2, *photos, *options)  # 2 + a padded batch of 1
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    names = [line.split("\t") for line in IMAGENET_CLASSES.read_text().splitlines()]
    check_rows(rows, reference_probabilities(graph, args, aux, photos), photos, names, atol=2e-6)


def test_text_output_and_class_numbers_file(released, photos, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("".join("c%d\n" % i for i in range(1000)))
    done = predict("--model-prefix", released[0], "--top", 2, "--classes", classes, photos[0], process=True)
    assert done.returncode == 0, done.stderr
    line, = done.stdout.splitlines()
    assert line.startswith("%s: " % photos[0]) and line.count(" c") == 2  # each class named once
    assert "(c" not in line


@pytest.mark.parametrize("make_input, options, status, message", [
    (lambda tmp: tmp / "missing.jpg", [], 1, "missing.jpg: no such image file"),
    (lambda tmp: (tmp / "notes.jpg").write_text("not a picture") and tmp / "notes.jpg", [], 1,
     "notes.jpg: not an image MXNet can decode"),
    (lambda tmp: sample_photo("chelsea.png"), ["--gpus", "0,x"], 2, "--gpus: expected comma-separated GPU ids"),
    (lambda tmp: sample_photo("chelsea.png"), ["--size", "16"], 1, "too small for this DPN: it needs at least 32 px"),
])
def test_bad_input_gives_one_line_error(released, tmp_path, make_input, options, status, message):
    done = predict("--model-prefix", released[0], make_input(tmp_path), *options, process=True)
    assert done.returncode == status  # 2: a usage error, found before any work
    assert message in done.stderr and "Traceback" not in done.stderr
