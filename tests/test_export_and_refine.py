"""tools/export_onnx.py: its file run with onnxruntime here against the authors' graph and a NumPy mean-max; and
tools/refine_bn.py: statistics averaged as promised, corrupted BatchNorm statistics repaired."""
import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import onnx
import onnxruntime
import pytest

import symbols
from dpn_mxnet import checkpoint, data, identify
from dpn_mxnet.evaluation import evaluate

from conftest import REPO
from in_process import run_script
from checkpoints import FEATURES, assert_depends_on_input, msra_params
from test_score_graph import meanmax_reference, structured_images
from test_symbols import forward, logits_of
from test_train import TINY


def tool(*args, process=True):
    """The report of a tool run as a process or, without ``process``, in this process (in_process.py)."""
    if process:
        done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    else:
        done = run_script(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def independent_logits(graph, args, aux, images):
    """Class scores of the authors' graph at 224; at another size its feature maps, mean-max pooled in NumPy."""
    if images.shape[-1] == 224:
        return forward(logits_of(graph), args, aux, images).astype(np.float64)
    features = forward(graph.get_internals()[FEATURES], args, aux, images)
    return meanmax_reference(features.astype(np.float64), args["fc6_weight"].asnumpy(), args["fc6_bias"].asnumpy())


@pytest.mark.parametrize("options", [[], ["--size", 320, "--meanmax"]])
def test_onnx_export_matches_mxnet(released, tmp_path, options):
    """The exported file, run here with onnxruntime, gives the class scores of the authors' graph (at 320 a NumPy
    mean-max of its feature maps), at batch 2 and at batch 1 from the same file: the batch dimension is free; the
    input and output are named for what they are; the preprocessing is printed and stored with the model."""
    prefix, graph, args, aux = released
    out = tmp_path / "dpn68.onnx"
    command = ["tools/export_onnx.py", "--model-prefix", prefix, "-o", out, *options]
    if options:  # the other case runs the tool as a process of its own
        done = run_script(*command)
    else:
        done = subprocess.run([sys.executable, *map(str, command)], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == 0, done.stderr
    note, line = done.stdout.strip().splitlines()[-2:]
    report = json.loads(line)
    size = 320 if options else 224
    assert out.stat().st_size > 40e6  # the weights are in the file
    assert report["size"] == size and report["meanmax"] == bool(options)
    expected_note = "centre %dx%d crop, (pixel - (124, 117, 104)) * 0.0167 per channel" % (size, size)
    assert note.startswith("note: preprocessing is not part of the model") and expected_note in note
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["preprocessing"] == report["preprocessing"]

    images = structured_images(size, 2, seed=3)
    expected = independent_logits(graph, args, aux, images)
    tolerance = 1e-5 * np.abs(expected).max()
    assert_depends_on_input(expected, tolerance)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", ["batch", 3, size, size])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 1000])]
    (two,) = session.run(["logits"], {"image": images})
    (one,) = session.run(["logits"], {"image": images[:1]})
    assert np.abs(two - expected).max() <= tolerance and np.abs(one[0] - expected[0]).max() <= tolerance


def stem_convolution(images, weight, stride=2):
    """NumPy: the stem's convolution (kernel k, padding k // 2, no bias) of NCHW ``images``."""
    kernel = weight.shape[-1]
    padded = np.pad(images, ((0, 0), (0, 0), (kernel // 2,) * 2, (kernel // 2,) * 2))
    rows = (padded.shape[2] - kernel) // stride + 1
    cols = (padded.shape[3] - kernel) // stride + 1
    return sum(np.einsum("nchw,oc->nohw", padded[:, :, y:y + stride * rows:stride, x:x + stride * cols:stride],
                         weight[:, :, y, x]) for y in range(kernel) for x in range(kernel))


def test_bn_refinement_averages_the_statistics_of_each_batch(tmp_path, digits_rec):
    """The first BatchNorm's refined statistics are the average over the batches of each batch's mean and biased
    variance of its input (the stem's convolution, computed here in NumPy), not the statistics of all images."""
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    args, aux = msra_params(symbol, seed=3, data_shape=(1, 3, 32, 32))
    prefix = str(tmp_path / "tiny")
    checkpoint.save(prefix, 1, symbol, args, aux)
    checkpoint.save_model_info(prefix, {"network": TINY, "num_classes": 10, "image_size": 32})
    tool("tools/refine_bn.py", "--model-prefix", prefix, "--load-epoch", 1, "--data-train", digits_rec.train, "--batches", 3,
         "--batch-size", 8, "--data-nthreads", 1, process=False)
    refined = checkpoint.load(prefix + "-bnrefined", 1)

    weight = args["conv1_x_1__conv_weight"].asnumpy().astype(np.float64)
    batches = data.val_iter(digits_rec.train, 8, 32, threads=1)
    inputs = [stem_convolution(next(batches).data[0].asnumpy().astype(np.float64), weight) for _ in range(3)]
    mean = np.mean([x.mean(axis=(0, 2, 3)) for x in inputs], axis=0)
    variance = np.mean([x.var(axis=(0, 2, 3)) for x in inputs], axis=0)
    pooled = np.concatenate(inputs).var(axis=(0, 2, 3))
    tolerance = 1e-5 * np.abs(variance).max()
    assert np.abs(pooled - variance).max() > 10 * tolerance  # the batches differ: an average of batches is not this
    np.testing.assert_allclose(refined.aux_params["conv1_x_1__relu-sp__bn_moving_mean"].asnumpy(), mean,
                               rtol=1e-5, atol=1e-5 * np.abs(mean).max())
    np.testing.assert_allclose(refined.aux_params["conv1_x_1__relu-sp__bn_moving_var"].asnumpy(), variance,
                               rtol=1e-5, atol=tolerance)
    for name, value in args.items():  # the weights stay as they are
        np.testing.assert_array_equal(refined.arg_params[name].asnumpy(), value.asnumpy(), err_msg=name)


def accuracy(prefix, epoch, rec):
    ckpt = checkpoint.load(prefix, epoch)
    spec = identify.model_spec(ckpt)
    batches = data.val_iter(rec, 20, spec.train_size, threads=1)
    module = mx.mod.Module(symbols.get_symbol(spec.network, spec.num_classes, image_size=spec.train_size))
    module.bind(batches.provide_data, batches.provide_label, for_training=False)
    module.set_params(ckpt.arg_params, ckpt.aux_params)
    return 100 - evaluate(module, batches).top1_error


def test_bn_refinement_restores_corrupted_statistics(tmp_path, digits_rec, tiny_digits_run):
    """Epoch 4 of the shared run (trained.py: batch 8, rate 0.1, the digits' augmentation), its BatchNorm
    statistics corrupted, then refined."""
    prefix = tiny_digits_run
    trained = accuracy(prefix, 4, digits_rec.val)
    assert trained > 50

    ckpt = checkpoint.load(prefix, 4)
    corrupted = {name: value * 25 if name.endswith("_var") else value + 3 for name, value in ckpt.aux_params.items()}
    broken = str(tmp_path / "broken")
    checkpoint.save(broken, 4, symbols.get_symbol(TINY, 10, image_size=32), ckpt.arg_params, corrupted)
    checkpoint.save_model_info(broken, ckpt.info)
    assert accuracy(broken, 4, digits_rec.val) < trained - 30

    report = tool("tools/refine_bn.py", "--model-prefix", broken, "--load-epoch", 4, "--data-train", digits_rec.train,
                  "--batches", 30, "--batch-size", 8)
    assert report["batchnorms"] == len(ckpt.aux_params) // 2 and report["batches"] == 30
    refined = accuracy(broken + "-bnrefined", 4, digits_rec.val)
    assert refined > trained - 10, (trained, refined)
    assert checkpoint.load(broken + "-bnrefined", 4).arg_params.keys() == ckpt.arg_params.keys()
