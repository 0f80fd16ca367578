"""Checkpoints with random weights for scoring, prediction and export tests: MSRA weights for any graph, and the
``released`` fixture, a checkpoint of the authors' own dpn68 graph as mx.model writes it."""
import cv2
import mxnet as mx
import numpy as np
import pytest

from dpn_mxnet.sample_photos import NAMES, sample_photo
from dpn_mxnet import identify

FEATURES = "conv5_x_x__relu-sp__relu_output"  # the authors' graph: the feature map before pooling


def msra_params(symbol, seed=0, data_shape=(1, 3, 224, 224)):
    """MSRA-initialised weights and BatchNorm parameters and statistics of a trained network's kind (scales near
    1, shifts and means near 0, variances near 1, each different): activations keep their spatial structure with
    depth, so outputs depend on the input image, and every BatchNorm tensor counts."""
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    arg_shapes, aux_shapes = identify.parameter_shapes(symbol, data_shape)
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


def centre_classifier(graph, args, aux, spread=2.0):
    """Rescale the classifier ``fc6`` of the authors' ``graph`` and set its bias so that over the sample photographs
    (squashed to 224 x 224) each class score averages 0 and the scores spread by ``spread`` (standard deviation):
    with random weights the features share a large component that would otherwise give every photograph the same
    top classes; a trained model's scores are centred the same way, and stay in a range without float32 ties."""
    images = []
    for name in NAMES:
        rgb = cv2.resize(cv2.imread(str(sample_photo(name)), cv2.IMREAD_COLOR), (224, 224))[:, :, ::-1]
        images.append(((rgb - np.float32([124, 117, 104])) * np.float32(0.0167)).transpose(2, 0, 1))
    features = graph.get_internals()[FEATURES]
    inputs = dict(args, data=mx.nd.array(np.stack(images)))
    executor = features.bind(mx.cpu(), {n: v for n, v in inputs.items() if n in features.list_arguments()},
                             aux_states=aux, grad_req="null")
    pooled = executor.forward(is_train=False)[0].asnumpy().astype(np.float64).mean(axis=(2, 3))
    weight = args["fc6_weight"].asnumpy().astype(np.float64)
    scale = spread / ((pooled - pooled.mean(axis=0)) @ weight.T).std()
    args["fc6_weight"] = mx.nd.array(weight * scale)
    args["fc6_bias"] = mx.nd.array(-scale * pooled.mean(axis=0) @ weight.T)


@pytest.fixture(scope="session")
def released(reference, tmp_path_factory):
    """(prefix, graph, args, aux): the authors' dpn68 graph (their JSON) with random MSRA weights and a centred
    classifier (``centre_classifier``), saved."""
    graph = mx.sym.load(str(reference / "official" / "dpn68-symbol.json"))
    args, aux = msra_params(graph)
    centre_classifier(graph, args, aux)
    prefix = str(tmp_path_factory.mktemp("released") / "dpn68")
    mx.model.save_checkpoint(prefix, 0, graph, args, aux)
    return prefix, graph, args, aux
