"""The fully-convolutional mean-max test graph against an independent NumPy computation."""
import numpy as np
import pytest

import symbols

from checkpoints import assert_depends_on_input, msra_params
from test_symbols import forward, images, logits_of


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def meanmax_reference(feature_map, weight, bias, window=7, meanmax=True):
    """NumPy logits: 7x7 stride-1 average pooling, the classifier at every position, then mean (+ max)."""
    n, c, h, w = feature_map.shape
    positions = [(i, j) for i in range(h - window + 1) for j in range(w - window + 1)]
    pooled = np.stack([feature_map[:, :, i:i + window, j:j + window].mean(axis=(2, 3)) for i, j in positions], 1)
    scores = pooled @ weight.T + bias                     # (n, positions, classes)
    out = scores.mean(axis=1)
    if meanmax:
        out = 0.5 * (out + scores.max(axis=1))
    return out


def structured_images(size, count=2, seed=4):
    """Noise plus a bright square in a different corner per image, so that features vary with position."""
    images = np.random.RandomState(seed).normal(0, 0.5, (count, 3, size, size)).astype(np.float32)
    for i in range(count):
        rows = slice(0, size // 3) if i % 2 == 0 else slice(-size // 3, None)
        images[i, :, rows, rows] += 3
    return images


@pytest.mark.parametrize("size, meanmax", [(320, True), (352, True), (320, False)])
def test_meanmax_matches_numpy_from_the_feature_map(size, meanmax):
    args, aux = msra_params(symbols.get_symbol("dpn68"))
    images = structured_images(size)
    feature_map = forward(symbols.features("dpn68"), args, aux, images).astype(np.float64)
    weight, bias = args["fc6_weight"].asnumpy(), args["fc6_bias"].asnumpy()
    expected = meanmax_reference(feature_map, weight, bias, meanmax=meanmax)
    got = forward(symbols.score_logits("dpn68", image_size=size, meanmax=meanmax), args, aux, images)
    assert feature_map.shape[2] == size // 32
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-5 * scale
    probabilities = forward(symbols.score_symbol("dpn68", image_size=size, meanmax=meanmax), args, aux, images)
    assert np.abs(probabilities - softmax(expected)).max() <= 1e-4
    if meanmax:  # the max branch matters: plain averaging gives other scores
        assert np.abs(got - meanmax_reference(feature_map, weight, bias, meanmax=False)).max() > 1e-2 * scale


@pytest.mark.parametrize("model", list(symbols.VARIANTS))
def test_test_graph_at_224_equals_the_training_graph(model):
    args, aux = msra_params(symbols.get_symbol(model), seed=5)
    batch = images(2, 224, seed=6)
    training = forward(logits_of(symbols.get_symbol(model)), args, aux, batch)
    tolerance = 1e-5 * np.abs(training).max()
    assert_depends_on_input(training, tolerance)
    for meanmax in (True, False):
        assert np.abs(forward(symbols.score_logits(model, image_size=224, meanmax=meanmax), args, aux, batch)
                      - training).max() <= tolerance


def test_custom_network_uses_its_training_size_as_window():
    tiny = '{"stem_filters": 8, "stem_kernel": 3, "k_r": 16, "groups": 4, "k_sec": [1, 1, 1], ' \
           '"inc_sec": [4, 4, 4], "bw_base": 16}'
    graph = symbols.score_symbol(tiny, num_classes=10, image_size=64, train_size=32)
    assert graph.infer_shape(data=(3, 3, 64, 64))[1] == [(3, 10)]
    assert symbols.min_test_size(tiny, 32) == 17
    with pytest.raises(ValueError, match="needs an input of at least 17 px"):
        symbols.score_symbol(tiny, num_classes=10, image_size=16, train_size=32)
