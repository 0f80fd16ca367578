"""test/score.py as a user runs it: a checkpoint of the authors' graph on a small real .rec, errors checked against
top-1/top-5 computed here from the raw outputs of that graph, with labels chosen so that every scoring option
(size, mean-max, 10-crop, resize) changes the answer; mismatched checkpoints and missing epochs."""
import functools
import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from dpn_mxnet import data

from checkpoints import FEATURES, assert_depends_on_input
from conftest import REPO
from in_process import run_script
from test_data_iter import centre_crop
from test_score_graph import meanmax_reference, softmax


def score(*args, process=True):
    """test/score.py as a process of its own or, without ``process``, run in this process (in_process.py)."""
    if not process:
        return run_script("test/score.py", *args)
    return subprocess.run([sys.executable, "test/score.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def run_graph(graph, args, aux, images):
    inputs = dict(args, data=mx.nd.array(images), softmax_label=mx.nd.zeros(len(images)))
    return graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()


def val_outputs(graph, args, aux, rec, size):
    """The authors' graph at 224 (probabilities), or its feature maps at another size, of every record as
    val_iter delivers it."""
    graph = graph if size == 224 else graph.get_internals()[FEATURES]
    out = []
    for batch in data.val_iter(rec, 4, size, threads=1):
        out.append(run_graph(graph, args, aux, batch.data[0].asnumpy())[:4 - batch.pad])
    return np.concatenate(out)


def opencv_views(encoded, size, resize, ten_crop):
    """Views built here with OpenCV: the centre ``size`` crop of the short side resized to ``resize``, or with
    ``ten_crop`` that crop, the four corner crops and the five mirrored."""
    _, (top, left), full = centre_crop(encoded, size, resize)
    rows, cols = full.shape[1:]
    corners = [(top, left)] + ([(0, 0), (rows - size, 0), (0, cols - size), (rows - size, cols - size)]
                               if ten_crop else [])
    views = [full[:, y:y + size, x:x + size] for y, x in corners]
    return np.stack(views + ([v[:, :, ::-1] for v in views] if ten_crop else []))


def view_probabilities(graph, args, aux, records, size, resize, ten_crop):
    return np.stack([run_graph(graph, args, aux, opencv_views(encoded, size, resize, ten_crop)).mean(axis=0)
                     for _, encoded in records])


@pytest.fixture(scope="module")
def outputs(released, photo_rec):
    """protocol -> class probabilities of every validation record, computed without test/score.py (once, when first
    asked for): the authors' graph at 224; its 320 feature maps with NumPy mean or mean-max pooling; views cut with
    OpenCV."""
    _, graph, args, aux = released
    reader = mx.recordio.MXIndexedRecordIO(str(photo_rec.val.with_suffix(".idx")), str(photo_rec.val), "r")
    records = [mx.recordio.unpack(reader.read_idx(key)) for key in reader.keys]

    @functools.lru_cache(maxsize=None)
    def features_320():
        return val_outputs(graph, args, aux, photo_rec.val, 320).astype(np.float64)

    def pooled_320(meanmax):
        return softmax(meanmax_reference(features_320(), args["fc6_weight"].asnumpy(), args["fc6_bias"].asnumpy(),
                                         meanmax=meanmax))
    protocols = {
        "224": lambda: val_outputs(graph, args, aux, photo_rec.val, 224),
        "320": lambda: pooled_320(False),
        "320 mean-max": lambda: pooled_320(True),
        "224 of 256": lambda: view_probabilities(graph, args, aux, records, 224, 256, ten_crop=False),
        "ten-crop 256": lambda: view_probabilities(graph, args, aux, records, 224, 256, ten_crop=True),
        "ten-crop 288": lambda: view_probabilities(graph, args, aux, records, 224, 288, ten_crop=True),
    }
    computed = {}

    def probabilities(protocol):
        if protocol not in computed:
            computed[protocol] = protocols[protocol]()
        return computed[protocol]
    return probabilities


def errors(probabilities, labels):
    """(top-1, top-5) error in % of ``labels`` under ``probabilities``."""
    order = np.argsort(-probabilities, axis=1)
    return (100.0 * np.mean([label != row[0] for label, row in zip(labels, order)]),
            100.0 * np.mean([label not in row[:5] for label, row in zip(labels, order)]))


def separating_labels(expected, alternatives, margin):
    """A label per image: a top-1 hit, a top-5 hit or a miss under ``expected`` by more than ``margin`` in
    probability, chosen where possible as a hit under ``expected`` that a protocol of ``alternatives`` misses (the
    one separated from ``expected`` on the fewest images so far). Every label is a hit of ``expected`` or a clear
    miss, so each alternative scores no better, image by image, and worse on every image that separates them."""
    labels, separated = [], [0] * len(alternatives)
    for i, probs in enumerate(expected):
        order = np.argsort(-probs)
        top1 = [order[0]] if probs[order[0]] - probs[order[1]] > margin else []
        top5 = [c for c in order[1:5] if probs[c] - probs[order[5]] > margin]
        misses = []
        for alternative in alternatives:
            ranked = np.argsort(-alternative[i])
            misses.append({c for c in top1 if c != ranked[0]} | {c for c in top5 if c not in ranked[:5]})
        label = next((min(misses[j]) for j in sorted(range(len(alternatives)), key=separated.__getitem__)
                      if misses[j]), None)
        if label is None:
            label = ([top1, top5, [order[-1]]][i % 3] or [order[-1]])[0]
        separated = [count + (label in miss) for count, miss in zip(separated, misses)]
        labels.append(int(label))
    return labels


CASES = {  # options of test/score.py -> (the protocol they ask for, protocols that a wrong reading gives)
    "224": ((), "224", ["224 of 256", "320"]),
    "320": (("--size", 320), "320", ["320 mean-max", "224"]),
    "320 mean-max": (("--size", 320, "--meanmax"), "320 mean-max", ["320", "224"]),
    "320 mean-max authors": (("--size", 320, "--meanmax", "--arrangement", "authors"), "320 mean-max", ["320"]),
    "ten-crop": (("--ten-crop",), "ten-crop 256", ["224", "ten-crop 288"]),
    "ten-crop resize": (("--ten-crop", "--resize", 288), "ten-crop 288", ["ten-crop 256"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_score_reports_the_errors_of_the_raw_outputs(released, photo_rec, outputs, tmp_path, case):
    options, protocol, others = CASES[case]
    expected = outputs(protocol)
    assert_depends_on_input(expected, 1e-4)
    labels = separating_labels(expected, [outputs(o) for o in others], margin=1e-3 * expected.max())
    top1, top5 = errors(expected, labels)
    assert 0 < top1 and 0 < top5 < 100  # hits and misses of both kinds
    for other in others:  # a test/score.py that read its options as ``other`` gives another answer
        assert errors(outputs(other), labels) != (top1, top5), other
    rec = relabelled(photo_rec.val, labels, tmp_path / "val.rec")

    done = score("--model-prefix", released[0], "--load-epoch", 0, "--data-val", rec, "--batch-size", 4, "--json",
                 *options, process=case == "224")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["model"] == "dpn68" and row["images"] == len(labels) == data.num_records(photo_rec.val)
    assert row["arrangement"] == ("authors" if "authors" in options else "cpu")  # auto: cpu on oneDNN CPUs
    assert row["top1_error"] == pytest.approx(top1, abs=1e-3)
    assert row["top5_error"] == pytest.approx(top5, abs=1e-3)


def relabelled(rec, labels, out):
    """A copy of ``rec`` with new labels, written with MXNet's recordio module."""
    source = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    target = mx.recordio.MXIndexedRecordIO(str(out.with_suffix(".idx")), str(out), "w")
    for key, label in zip(source.keys, labels):
        header, image = mx.recordio.unpack(source.read_idx(key))
        target.write_idx(key, mx.recordio.pack(header._replace(flag=0, label=float(label)), image))
    source.close()
    target.close()
    return out


@pytest.mark.parametrize("options, message", [
    (["--network", "dpn92"], "checkpoint tensor conv1_x_1__conv_weight has shape (10, 3, 3, 3) but dpn92 with 1000 "
                           "classes needs (64, 3, 7, 7)"),
    (["--num-classes", 365], "checkpoint tensor fc6_weight has shape (1000, 832) but dpn68 with 365 classes needs "
                             "(365, 832)"),
    (["--load-epoch", 5], "dpn68-0005.params not found; epochs saved under"),
    (["--size", 160], "size 160 is too small for the test graph"),
])
def test_bad_checkpoint_or_option_gives_one_line_error(released, photo_rec, options, message):
    done = score("--model-prefix", released[0], "--data-val", photo_rec.val, *options)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert message in done.stderr.strip().splitlines()[-1], done.stderr
    if "--load-epoch" in options:
        assert done.stderr.strip().endswith(": 0")


def test_missing_rec_is_named(released, tmp_path):
    done = score("--model-prefix", released[0], "--data-val", tmp_path / "nowhere.rec")
    assert done.returncode != 0 and "nowhere.rec: no such record file" in done.stderr
