"""Checkpoints with random weights for scoring, prediction and export tests: MSRA weights for any graph, and the
``released`` fixture, a checkpoint of the authors' own dpn68 graph as mx.model writes it."""
import mxnet as mx
import numpy as np
import pytest

from train import checkpoint


def msra_params(symbol, seed=0, data_shape=(1, 3, 224, 224)):
    """MSRA-initialised weights and BatchNorm parameters and statistics of a trained network's kind (scales near
    1, shifts and means near 0, variances near 1, each different): activations keep their spatial structure with
    depth, so outputs depend on the input image, and every BatchNorm tensor counts."""
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    arg_shapes, aux_shapes = checkpoint.parameter_shapes(symbol, data_shape)
    args = {}
    for name, shape in arg_shapes.items():
        if name.endswith("_gamma"):
            args[name] = mx.nd.array(rng.uniform(0.8, 1.2, shape))
        elif name.endswith("_beta"):
            args[name] = mx.nd.array(rng.normal(0, 0.1, shape))
        else:
            args[name] = mx.nd.zeros(shape)
            init(mx.init.InitDesc(name), args[name])
    aux = {n: mx.nd.array(rng.normal(0, 0.1, s) if n.endswith("_mean") else rng.uniform(0.8, 1.25, s))
           for n, s in aux_shapes.items()}
    return args, aux


def assert_depends_on_input(outputs, tolerance):
    """The outputs of two different images (rows 0 and 1) differ by far more than ``tolerance``: a comparison of
    graphs within that tolerance then says something about how each graph treats its input."""
    outputs = np.asarray(outputs, np.float64)
    difference = np.abs(outputs[0] - outputs[1]).max()
    assert difference > 100 * tolerance, "outputs of two images differ by only %.3g (tolerance %.3g)" % (
        difference, tolerance)


@pytest.fixture(scope="session")
def released(reference, tmp_path_factory):
    """(prefix, graph, args, aux): the authors' dpn68 graph (their JSON) with random MSRA weights, saved."""
    graph = mx.sym.load(str(reference / "official" / "dpn68-symbol.json"))
    args, aux = msra_params(graph)
    args["fc6_weight"] *= 0.02  # logits of a trained model's range: no float32 underflow ties among probabilities
    prefix = str(tmp_path_factory.mktemp("released") / "dpn68")
    mx.model.save_checkpoint(prefix, 0, graph, args, aux)
    return prefix, graph, args, aux
