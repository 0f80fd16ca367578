"""The builders reproduce the authors' graphs exactly, load their checkpoints and build custom DPNs."""
import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import symbols
from dpn_mxnet import checkpoint, identify

from checkpoints import FEATURES, assert_depends_on_input, msra_params
from conftest import REPO

VARIANTS = list(symbols.VARIANTS)


def official(reference, model):
    return reference / "official" / ("%s-symbol.json" % model)


def forward(symbol, args, aux, images):
    inputs = {n: mx.nd.zeros(len(images)) for n in symbol.list_arguments() if n.endswith("_label")}
    inputs.update(args, data=mx.nd.array(images))
    executor = symbol.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null")
    return executor.forward(is_train=False)[0].asnumpy()


def logits_of(graph):
    """The class scores that a training graph's SoftmaxOutput head reads."""
    return graph.get_children()[0]


def images(count, size, seed):
    """``count`` different images of normalised-pixel statistics, (count, 3, size, size) float32."""
    return np.random.RandomState(seed).normal(0, 1, (count, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("model", VARIANTS)
def test_graph_is_the_authors_node_for_node(reference, model):
    ours = json.loads(symbols.get_symbol(model).tojson())
    theirs = json.loads(official(reference, model).read_text())
    assert len(ours["nodes"]) == len(theirs["nodes"])
    for mine, authors in zip(ours["nodes"], theirs["nodes"]):
        assert mine == authors
    assert ours["heads"] == theirs["heads"]
    assert ours["arg_nodes"] == theirs["arg_nodes"]


@pytest.mark.parametrize("model", VARIANTS)
def test_parameter_names_and_shapes_match_the_manifest(reference, model):
    manifest = json.loads((reference / "official" / ("%s-params.json" % model)).read_text())
    symbol = symbols.get_symbol(model)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, 224, 224))
    args = {n: list(s) for n, s in zip(symbol.list_arguments(), arg_shapes) if n not in ("data", "softmax_label")}
    assert args == manifest["arg"]
    assert dict(zip(symbol.list_auxiliary_states(), map(list, aux_shapes))) == manifest["aux"]


@pytest.mark.parametrize("model", VARIANTS)
def test_checkpoint_of_the_authors_graph_gives_identical_outputs(reference, tmp_path, model):
    theirs = mx.sym.load(str(official(reference, model)))
    args, aux = msra_params(theirs, seed=len(model))
    prefix = str(tmp_path / model)
    checkpoint.save(prefix, 0, theirs, args, aux)
    loaded = checkpoint.load(prefix, 0)
    at_224 = images(2, 224, seed=1)
    expected = forward(logits_of(theirs), args, aux, at_224)
    tolerance = 1e-6 * np.abs(expected).max()
    assert_depends_on_input(expected, tolerance)
    ours_224 = forward(logits_of(symbols.get_symbol(model)), loaded.arg_params, loaded.aux_params, at_224)
    assert np.abs(ours_224 - expected).max() <= tolerance
    # at 320 the training head no longer fits the classifier; compare the feature maps (get_before_pool)
    at_320 = images(2, 320, seed=2)
    their_features = forward(theirs.get_internals()[FEATURES], args, aux, at_320)
    tolerance = 1e-6 * np.abs(their_features).max()
    assert_depends_on_input(their_features, tolerance)
    ours_320 = forward(symbols.features(model), loaded.arg_params, loaded.aux_params, at_320)
    assert ours_320.shape == (2, symbols.feature_channels(model), 10, 10)
    assert np.abs(ours_320 - their_features).max() <= tolerance


def test_gluon_block_loads_the_same_checkpoint(reference, tmp_path):
    theirs = mx.sym.load(str(official(reference, "dpn68b")))
    args, aux = msra_params(theirs)
    prefix = str(tmp_path / "dpn68b")
    checkpoint.save(prefix, 0, theirs, args, aux)
    block = symbols.dpn_block("dpn68b")
    block.load_parameters(checkpoint.params_path(prefix, 0))
    assert set(block.collect_params()) == set(args) | set(aux)
    batch = images(2, 224, seed=2)
    expected = forward(logits_of(theirs), args, aux, batch)
    tolerance = 1e-5 * np.abs(expected).max()
    assert_depends_on_input(expected, tolerance)
    block.hybridize()
    assert np.abs(block(mx.nd.array(batch)).asnumpy() - expected).max() <= tolerance


def test_class_count_and_classifier_name_are_parameters():
    shapes = dict(zip(*[symbols.get_symbol("dpn92", 4786).list_arguments(),
                        symbols.get_symbol("dpn92", 4786).infer_shape(data=(1, 3, 224, 224))[0]]))
    assert shapes["fc6_weight"] == (4786, 2688)
    places = symbols.get_symbol("dpn68", 365, classifier="fc6-1k")
    assert "fc6-1k_weight" in places.list_arguments() and "fc6_weight" not in places.list_arguments()
    assert "fc6-1k_weight" in symbols.get_symbol("dpn68b", 1000).list_arguments()
    assert "fc6_weight" in symbols.get_symbol("dpn68b", 4786).list_arguments()


TINY = json.dumps({"stem_filters": 8, "stem_kernel": 3, "k_r": 16, "groups": 4, "k_sec": [1, 1, 2],
                   "inc_sec": [4, 4, 8], "bw_base": 16})


@pytest.mark.parametrize("size", [32, 48, 64, 100])
def test_custom_configuration_trains_at_small_sizes(size):
    """The configured widths (last stage: bw_base x 4 residual + (k_sec + 2) x inc dense channels) reach the
    classifier, and SGD on a fixed batch of 4 different images learns their 4 labels."""
    symbol = symbols.get_symbol(TINY, num_classes=10, image_size=size)
    assert symbols.feature_channels(TINY) == 64 + 4 * 8
    assert identify.parameter_shapes(symbol, (4, 3, size, size))[0]["fc6_weight"] == (10, 64 + 4 * 8)
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=[("data", (4, 3, size, size))], label_shapes=[("softmax_label", (4,))])
    mx.random.seed(size)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1, "momentum": 0.9})
    labels = np.array([0, 1, 2, 3])
    batch = mx.io.DataBatch([mx.nd.array(images(4, size, seed=size))], [mx.nd.array(labels)])
    losses = []
    for _ in range(15):
        module.forward_backward(batch)
        out = module.get_outputs()[0].asnumpy()
        losses.append(-np.log(out[np.arange(4), labels]).mean())
        module.update()
    assert out.shape == (4, 10)
    assert losses[-1] < 0.2 * losses[0], losses


def test_named_variant_at_other_sizes_pools_globally():
    pooling = [n for n in json.loads(symbols.get_symbol("dpn68", image_size=320).tojson())["nodes"]
               if n["name"] == "pool5"][0]
    assert pooling["attrs"]["global_pool"] == "True"
    _, out_shapes, _ = symbols.get_symbol("dpn68", image_size=320).infer_shape(data=(1, 3, 320, 320))
    assert out_shapes == [(1, 1000)]


@pytest.mark.parametrize("call, message", [
    (lambda: symbols.get_symbol("dpn93"), "unknown model 'dpn93': choose one of dpn68, dpn68b, dpn92"),
    (lambda: symbols.get_symbol("dpn92", num_classes=0), "num_classes must be a positive integer"),
    (lambda: symbols.get_symbol("dpn92", image_size=16),
     "input size 16 is too small for this DPN: it needs at least 32"),
    (lambda: symbols.score_symbol("dpn92", image_size=160), "needs an input of at least 193 px"),
    (lambda: symbols.resolve('{"stem_filters": 8}'), "bad custom DPN configuration"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_summary_tool_reproduces_the_reference_summary(reference):
    expected = json.loads((reference / "official" / "summary.json").read_text())
    out = subprocess.run([sys.executable, "tools/summary.py", "--json"], check=True, capture_output=True, text=True,
                         cwd=REPO).stdout
    rows = {row["model"]: row for row in map(json.loads, out.splitlines())}
    assert set(rows) == set(expected)
    for model, ref in expected.items():
        row = rows[model]
        assert row["params"] == ref["n_arg_params"] and row["aux"] == ref["n_aux"]
        assert row["MiB"] == ref["file_MiB_args_plus_aux_fp32"]
        assert abs(row["GMACs_224"] - ref["total_GMACs_224"]) < 1e-3
        assert abs(row["GMACs_320_meanmax"] - ref["score_graph_GMACs_320"]) < 1e-3
