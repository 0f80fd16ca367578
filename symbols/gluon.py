"""Gluon access to the same graphs: a hybridizable block whose parameters carry the checkpoint names."""
import mxnet as mx
from mxnet import gluon

from .arrangement import AUTHORS
from .dpn import logits


def dpn_block(network="dpn92", num_classes=1000, classifier=None, image_size=224, *, arrangement=AUTHORS):
    """A HybridBlock mapping images (N, 3, S, S) to class logits.

    It wraps the Symbol graph of ``symbols.logits``, so there is one definition of every DPN; its parameters
    are named exactly as in the authors' and our checkpoints, and ``block.load_parameters('dpn92-0000.params')``
    reads a Module checkpoint (``arg:``/``aux:`` keys) directly. ``arrangement`` is one for training, such as
    ``symbols.CPU`` (its inference form needs its weights precomputed, which a trainable block cannot have).
    """
    graph = logits(network, num_classes, classifier, image_size, arrangement=arrangement)
    return gluon.SymbolBlock(graph, mx.sym.var("data", dtype="float32"))
