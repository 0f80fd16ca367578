"""test/score.py as a user runs it: a checkpoint of the authors' graph on a small real .rec, errors checked against
top-1/top-5 computed here from the raw outputs of that graph; mismatched checkpoints and missing epochs."""
import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from dpn_mxnet import data

from conftest import REPO
from test_score_graph import meanmax_reference, softmax

RANK_CYCLE = (0, 3, 700)   # label = the class at this rank of the image's own scores: a top-1 hit, a top-5 hit, a miss


def score(*args):
    return subprocess.run([sys.executable, "test/score.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def raw_probabilities(graph, args, aux, rec, size, meanmax):
    """Class probabilities of every record: the authors' graph at 224, its features + NumPy mean-max otherwise."""
    batches = data.val_iter(rec, 4, size, threads=1)
    features = graph.get_internals()["conv5_x_x__relu-sp__relu_output"]
    out = []
    for batch in batches:
        inputs = dict(args, data=batch.data[0].as_in_context(mx.cpu()),
                      softmax_label=batch.label[0].as_in_context(mx.cpu()))
        if size == 224:
            probs = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()
        else:
            fmap = features.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()
            probs = softmax(meanmax_reference(fmap.astype(np.float64), args["fc6_weight"].asnumpy(),
                                              args["fc6_bias"].asnumpy(), meanmax=meanmax))
        out.append(probs[:len(probs) - batch.pad])
    return np.concatenate(out)


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


@pytest.mark.parametrize("size, meanmax, options",
                         [(224, False, []), (320, True, []), (320, True, ["--arrangement", "authors"])])
def test_score_reports_the_errors_of_the_raw_outputs(released, photo_rec, tmp_path, size, meanmax, options):
    prefix, graph, args, aux = released
    probs = raw_probabilities(graph, args, aux, photo_rec.val, size, meanmax)
    order = np.argsort(-probs, axis=1)
    ranks = [RANK_CYCLE[i % len(RANK_CYCLE)] for i in range(len(probs))]
    labels = [order[i, rank] for i, rank in enumerate(ranks)]
    rec = relabelled(photo_rec.val, labels, tmp_path / "val.rec")
    top1 = 100.0 * np.mean([label != row[0] for label, row in zip(labels, order)])
    top5 = 100.0 * np.mean([label not in row[:5] for label, row in zip(labels, order)])
    assert 0 < top1 and 0 < top5 < 100  # hits and misses of both kinds

    done = score("--prefix", prefix, "--epoch", 0, "--data-val", rec, "--size", size, *(["--meanmax"] * meanmax),
                 "--batch-size", 4, "--json", *options)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["model"] == "dpn68" and row["images"] == len(probs) == data.num_records(photo_rec.val)
    assert row["arrangement"] == (options[1] if options else "cpu")  # auto: the CPU arrangement on oneDNN CPUs
    assert row["top1_error"] == pytest.approx(top1, abs=1e-3)
    assert row["top5_error"] == pytest.approx(top5, abs=1e-3)


def test_ten_crop_averages_the_ten_views(released, photo_rec):
    prefix, graph, args, aux = released
    views = data.ten_crop_iter(photo_rec.val, 2, 224, 256)
    probs, labels = [], []
    for batch in views:
        keep = batch.data[0].shape[0] - batch.pad
        inputs = dict(args, data=batch.data[0].as_in_context(mx.cpu()),
                      softmax_label=batch.label[0].as_in_context(mx.cpu()))
        out = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward()[0].asnumpy()[:keep]
        probs.append(out.reshape(-1, 10, out.shape[1]).mean(axis=1))
        labels.append(batch.label[0].asnumpy()[:keep:10])
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    order = np.argsort(-probs, axis=1)
    done = score("--prefix", prefix, "--data-val", photo_rec.val, "--ten-crop", "--batch-size", 2, "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["images"] == len(labels) == data.num_records(photo_rec.val)
    assert row["top1_error"] == pytest.approx(100.0 * np.mean(order[:, 0] != labels), abs=1e-3)
    top5 = 100.0 * np.mean([label not in ranked[:5] for label, ranked in zip(labels, order)])
    assert row["top5_error"] == pytest.approx(top5, abs=1e-3)


@pytest.mark.parametrize("options, message", [
    (["--model", "dpn92"], "checkpoint tensor conv1_x_1__conv_weight has shape (10, 3, 3, 3) but dpn92 with 1000 "
                           "classes needs (64, 3, 7, 7)"),
    (["--num-classes", 365], "checkpoint tensor fc6_weight has shape (1000, 832) but dpn68 with 365 classes needs "
                             "(365, 832)"),
    (["--epoch", 5], "dpn68-0005.params not found; epochs saved under"),
    (["--size", 160], "size 160 is too small for the test graph"),
])
def test_bad_checkpoint_or_option_gives_one_line_error(released, photo_rec, options, message):
    done = score("--prefix", released[0], "--data-val", photo_rec.val, *options)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert message in done.stderr.strip().splitlines()[-1], done.stderr
    if "--epoch" in options:
        assert done.stderr.strip().endswith(": 0")


def test_missing_rec_is_named(released, tmp_path):
    done = score("--prefix", released[0], "--data-val", tmp_path / "nowhere.rec")
    assert done.returncode != 0 and "nowhere.rec: no such record file" in done.stderr
