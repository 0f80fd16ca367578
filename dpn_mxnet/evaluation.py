"""Inference: a Module bound for it, and top-1 / top-k error (k = 5, or the number of classes when fewer) over a
data iterator, every sample counted once."""
import time
from dataclasses import dataclass

import mxnet as mx
import numpy as np

import symbols
from .arrangement_policy import bind_settings


@dataclass
class Scores:
    top1_error: float   # percent
    topk_error: float   # percent: the label not among the k best classes
    k: int
    count: int          # images scored
    seconds: float

    @property
    def images_per_second(self):
        return self.count / self.seconds if self.seconds else float("nan")


def inference_module(symbol, contexts, data_shapes, label_shapes, arg_params, aux_params,
                     arrangement=symbols.AUTHORS):
    """A Module of ``symbol``, a graph in ``arrangement``, bound for inference with these parameters (extra ones
    are ignored): the convolution weights that the graph computes from them computed once
    (``symbols.precompute_weights``), the arrangement's binding settings in force while it binds."""
    symbol, arg_params = symbols.precompute_weights(symbol, arg_params)
    module = mx.mod.Module(symbol, context=contexts, label_names=[name for name, _ in label_shapes or []])
    with bind_settings(arrangement):
        module.bind(data_shapes=data_shapes, label_shapes=label_shapes, for_training=False)
    module.set_params(arg_params, aux_params, allow_extra=True)
    return module


TOP_K = 5


def top_k(num_classes):
    """The k of the top-k error: 5, or the number of classes when fewer."""
    return min(TOP_K, num_classes)


def topk_hits(probabilities, labels, k):
    """(top-1 hits, top-k hits) of a batch of class scores against integer labels."""
    best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    top1 = probabilities.argmax(axis=1)
    return int((top1 == labels).sum()), int((best == labels[:, None]).any(axis=1).sum())


def evaluate(module, batches, crops=1, progress=None):
    """Score ``module`` (bound for inference) on ``batches`` from the start.

    Each batch's padding (``batch.pad``) is dropped. With ``crops`` > 1 every group of that many consecutive
    samples is several views of one image: their probabilities are averaged and the group counts once.
    ``progress(images_done)`` is called after every batch.
    """
    batches.reset()
    hits1 = hitsk = count = 0
    k = top_k(module.output_shapes[0][1][1])
    start = time.time()
    for batch in batches:
        module.forward(batch, is_train=False)
        keep = batch.data[0].shape[0] - batch.pad
        probabilities = module.get_outputs()[0].asnumpy()[:keep]
        labels = batch.label[0].asnumpy()[:keep].astype(np.int64)
        if crops > 1:
            probabilities = probabilities.reshape(-1, crops, probabilities.shape[1]).mean(axis=1)
            labels = labels[::crops]
        top1, topk = topk_hits(probabilities, labels, k)
        hits1, hitsk, count = hits1 + top1, hitsk + topk, count + len(labels)
        if progress:
            progress(count)
    seconds = time.time() - start
    if not count:
        return Scores(float("nan"), float("nan"), k, 0, seconds)
    return Scores(100.0 * (1 - hits1 / count), 100.0 * (1 - hitsk / count), k, count, seconds)
