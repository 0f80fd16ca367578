"""tools/export_onnx.py against onnxruntime, and tools/refine_bn.py repairing corrupted BatchNorm statistics."""
import json
import subprocess
import sys

import mxnet as mx
import pytest

import symbols
from dpn_mxnet import checkpoint, data
from dpn_mxnet.evaluation import evaluate

from conftest import REPO
from checkpoints import msra_params
from test_train import DIGITS_AUG, TINY, run_train, train_command


def tool(*args):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def authors_dpn68(reference, tmp_path_factory):
    graph = mx.sym.load(str(reference / "official" / "dpn68-symbol.json"))
    args, aux = msra_params(graph)
    args["fc6_weight"] *= 0.02
    prefix = str(tmp_path_factory.mktemp("dpn68") / "dpn68")
    mx.model.save_checkpoint(prefix, 0, graph, args, aux)
    return prefix


@pytest.mark.parametrize("options", [[], ["--size", 320, "--meanmax"]])
def test_onnx_export_matches_mxnet(authors_dpn68, tmp_path, options):
    out = tmp_path / "dpn68.onnx"
    report = tool("tools/export_onnx.py", "--prefix", authors_dpn68, "-o", out, *options)
    assert out.stat().st_size > 40e6  # the weights are in the file
    assert report["size"] == (320 if options else 224) and report["meanmax"] == bool(options)
    assert report["max_abs_logit_diff"] < 1e-4


def accuracy(prefix, epoch, rec):
    ckpt = checkpoint.load(prefix, epoch)
    spec = checkpoint.model_spec(ckpt)
    batches = data.val_iter(rec, 20, spec.train_size, threads=1)
    module = mx.mod.Module(symbols.get_symbol(spec.network, spec.num_classes, image_size=spec.train_size))
    module.bind(batches.provide_data, batches.provide_label, for_training=False)
    module.set_params(ckpt.arg_params, ckpt.aux_params)
    return 100 - evaluate(module, batches).top1_error


def test_bn_refinement_restores_corrupted_statistics(tmp_path, digits_rec):
    prefix = str(tmp_path / "tiny")
    done = run_train(train_command(digits_rec, prefix, "--batch-size", 8, "--num-epochs", 4, "--lr", 0.1,
                                   *DIGITS_AUG))
    assert done.returncode == 0, done.stderr
    trained = accuracy(prefix, 4, digits_rec.val)
    assert trained > 50

    ckpt = checkpoint.load(prefix, 4)
    corrupted = {name: value * 25 if name.endswith("_var") else value + 3 for name, value in ckpt.aux_params.items()}
    broken = str(tmp_path / "broken")
    checkpoint.save(broken, 4, symbols.get_symbol(TINY, 10, image_size=32), ckpt.arg_params, corrupted)
    checkpoint.save_model_info(broken, ckpt.info)
    assert accuracy(broken, 4, digits_rec.val) < trained - 30

    report = tool("tools/refine_bn.py", "--prefix", broken, "--epoch", 4, "--data-train", digits_rec.train,
                  "--batches", 30, "--batch-size", 8)
    assert report["batchnorms"] == len(ckpt.aux_params) // 2 and report["batches"] == 30
    refined = accuracy(broken + "-bnrefined", 4, digits_rec.val)
    assert refined > trained - 10, (trained, refined)
    assert checkpoint.load(broken + "-bnrefined", 4).arg_params.keys() == ckpt.arg_params.keys()
