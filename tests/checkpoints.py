"""Checkpoints with random weights for scoring, prediction and export tests: MSRA weights for any graph, and the
``released`` fixture, a checkpoint of the authors' own dpn68 graph as mx.model writes it."""
import mxnet as mx
import pytest


def msra_params(symbol, seed=0):
    """MSRA-initialised weights and fresh BN statistics: activations keep their spatial structure with depth."""
    mx.random.seed(seed)
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, 224, 224))
    args = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name != "data" and not name.endswith("_label"):
            args[name] = mx.nd.zeros(shape)
            init(mx.init.InitDesc(name), args[name])
    aux = {n: mx.nd.zeros(s) if n.endswith("_mean") else mx.nd.ones(s)
           for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}
    return args, aux


@pytest.fixture(scope="session")
def released(reference, tmp_path_factory):
    """(prefix, graph, args, aux): the authors' dpn68 graph (their JSON) with random MSRA weights, saved."""
    graph = mx.sym.load(str(reference / "official" / "dpn68-symbol.json"))
    args, aux = msra_params(graph)
    args["fc6_weight"] *= 0.02  # logits of a trained model's range: no float32 underflow ties among probabilities
    prefix = str(tmp_path_factory.mktemp("released") / "dpn68")
    mx.model.save_checkpoint(prefix, 0, graph, args, aux)
    return prefix, graph, args, aux
