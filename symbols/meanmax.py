"""The authors' fully-convolutional test graph (score.py), with optional mean-max pooling of the class scores.

features -> average pooling with the training-size window (7x7 at 224), stride 1 -> the classifier as a 1x1
convolution (its weight is the checkpoint's [K, C] FC weight, reshaped inside the graph, so training
checkpoints load unchanged) -> a map of class scores -> average, or 0.5 * (average + max), over that map ->
softmax. At the training size the map is 1x1 and the graph equals the training graph.
"""
import mxnet as mx

from .arrangement import AUTHORS
from .config import default_classifier, resolve
from .dpn import check_num_classes, feature_channels, feature_size, features, min_image_size


def min_test_size(network, train_size=224):
    """The smallest input whose feature map still holds one training-size pooling window (193 for 224)."""
    window = feature_size(network, train_size)
    size = min_image_size(network)
    while feature_size(network, size) < window:
        size += 1
    return size


def score_logits(network="dpn92", num_classes=1000, classifier=None, image_size=320, meanmax=True, train_size=224,
                 *, arrangement=AUTHORS):
    """The (mean-max or mean) pooled class-score map of an ``image_size`` input, before softmax, its features in
    ``arrangement`` (bound for inference: an ``Arrangement.for_inference()``)."""
    check_num_classes(num_classes)
    window = feature_size(network, train_size)
    if image_size < min_test_size(network, train_size):
        raise ValueError("size %d is too small for the test graph: the %dx%d pooling window of training size %d "
                         "needs an input of at least %d px" % (image_size, window, window, train_size,
                                                               min_test_size(network, train_size)))
    classifier = classifier or default_classifier(resolve(network), num_classes)
    channels = feature_channels(network)
    pooled = mx.sym.Pooling(data=features(network, arrangement=arrangement), kernel=(window, window), stride=(1, 1),
                            pool_type="avg", name="avg_pool")
    weight = mx.sym.var(classifier + "_weight", shape=(num_classes, channels))
    bias = mx.sym.var(classifier + "_bias", shape=(num_classes,))
    scores = mx.sym.Convolution(data=pooled, weight=mx.sym.reshape(weight, shape=(num_classes, channels, 1, 1)),
                                bias=bias, num_filter=num_classes, kernel=(1, 1), name=classifier)
    side = feature_size(network, image_size) - window + 1
    out = mx.sym.Flatten(mx.sym.Pooling(data=scores, kernel=(side, side), stride=(1, 1), pool_type="avg",
                                        name="out_pool1"))
    if meanmax:
        peak = mx.sym.Flatten(mx.sym.Pooling(data=scores, kernel=(side, side), stride=(1, 1), pool_type="max",
                                             name="out_pool2"))
        out = (out + peak) * 0.5
    return out


def score_symbol(network="dpn92", num_classes=1000, classifier=None, image_size=320, meanmax=True, train_size=224,
                 *, arrangement=AUTHORS):
    """Softmax over ``score_logits``: the graph test/score.py runs."""
    return mx.sym.SoftmaxOutput(data=score_logits(network, num_classes, classifier, image_size, meanmax, train_size,
                                                  arrangement=arrangement), name="softmax")
