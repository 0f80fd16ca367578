"""The epoch loop: Module forward/backward/update, Speedometer, validation, an ``epoch-summary`` line per epoch
(the same object that the checkpoint's metrics file records)."""
import hashlib
import json
import logging
import os
import time

import mxnet as mx
import numpy as np

from .evaluation import evaluate, top_k
from .launcher.progress import Progress

SUMMARY_TAG = "epoch-summary"


def learning_rate_schedule(base_lr, batches_per_epoch, steps, factor, warmup_epochs):
    """MXNet's MultiFactorScheduler over updates (None when the rate is constant)."""
    steps = [int(epoch * batches_per_epoch) for epoch in steps]
    warmup = int(warmup_epochs * batches_per_epoch)
    if not steps and not warmup:
        return None
    # MultiFactorScheduler needs at least one step after the warm-up; one beyond any run keeps the rate flat
    steps = [s for s in steps if s > warmup] or [2 ** 62]
    return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=factor, base_lr=base_lr, warmup_steps=warmup)


def weights_digest(module):
    """A short SHA-1 of all learned weights: equal on every worker of a healthy dist_sync job."""
    return _digest(module.get_params()[:1], None)


def state_digest(module):
    """A short SHA-1 of the whole training state, what a checkpoint restores: weights, BN moving statistics and
    the optimizer's state (momentum, float32 master weights). Each worker of a dist_sync job keeps the BN
    statistics of its own data, so this one differs between workers; rank 0's is the checkpoint's."""
    return _digest(module.get_params(), getattr(module, "_updater", None))  # Module keeps its optimizer there


def _digest(param_dicts, updater):
    digest = hashlib.sha1()
    for params in param_dicts:
        for name in sorted(params):
            digest.update(name.encode())
            digest.update(params[name].asnumpy().tobytes())
    for index in sorted(updater.states if updater is not None else ()):
        for state in _flat(updater.states[index]):
            digest.update(state.asnumpy().tobytes())
    return digest.hexdigest()[:16]


def _flat(state):
    """The NDArrays of one optimizer state (None, an NDArray or nested tuples of them)."""
    if isinstance(state, (tuple, list)):
        return [array for item in state for array in _flat(item)]
    return [] if state is None else [state]


def master_weights(module):
    """{name: float32 master copy} of the float16 weights that multi-precision SGD keeps (its state is
    (momentum, master copy), one per weight and device; the first device's is taken)."""
    updater = getattr(module, "_updater", None)
    if updater is None:
        return {}
    masters = {}
    for number, name in enumerate(module._exec_group.param_names):
        state = updater.states.get(number * len(module._context))
        if isinstance(state, tuple) and state[-1] is not None and state[-1].dtype == np.float32:
            masters[name] = state[-1]
    return masters


def train_metrics(num_classes):
    return mx.metric.create(["acc", mx.metric.TopKAccuracy(top_k=top_k(num_classes)), "ce"])


def train_step(module, batch, wait=False):
    """One SGD step on ``batch``: forward, backward, update; with ``wait``, returns once MXNet's engine is done."""
    module.forward_backward(batch)
    module.update()
    if wait:
        mx.nd.waitall()


def fit(module, train_batches, val_batches, begin_epoch, num_epoch, save, log_every=20, lr_of=None,
        logger=logging, progress=None):
    """Train ``module`` (bound, initialised, with its optimizer) from ``begin_epoch`` to ``num_epoch``.

    ``train_batches`` is an ``EpochBatches`` (or has its ``start_epoch``): epoch e's data does not depend on the
    epochs before it. ``save(epochs_done, summary)`` is called after every epoch with the epoch's summary (it
    decides what to write); ``lr_of(epochs_done)`` reports the learning rate for the summary. ``val_batches`` may
    be None (no validation, e.g. on ranks > 0). ``progress`` (a ``launcher.progress.Progress``) hears of every
    step, validation batch and checkpoint write.
    """
    progress = progress or Progress(enabled=False)
    steps = 0
    batch_size = train_batches.provide_data[0].shape[0]
    metric = train_metrics(module.output_shapes[0][1][1])
    speedometer = mx.callback.Speedometer(batch_size, log_every, auto_reset=False)
    for epoch in range(begin_epoch, num_epoch):
        metric.reset()
        train_batches.start_epoch(epoch)
        start, images = time.time(), 0
        for nbatch, batch in enumerate(train_batches):
            train_step(module, batch)
            module.update_metric(metric, batch.label)
            steps += 1
            progress(steps)
            images += batch.data[0].shape[0] - batch.pad
            # epochs counted from 1 in every line, as in the summary and the checkpoint names (MXNet's from 0)
            speedometer(mx.model.BatchEndParam(epoch=epoch + 1, nbatch=nbatch + 1, eval_metric=metric, locals=None))
        # oneDNN's BatchNorm backward updates the moving statistics, which MXNet's engine counts as read-only
        # inputs of the backward: a read right after the last step could see them before that update
        mx.nd.waitall()
        seconds = time.time() - start
        summary = {"epoch": epoch + 1, "train_images_per_second": round(images / seconds, 2),
                   "train_seconds": round(seconds, 1)}
        summary.update(("train_" + name.replace("top_k_accuracy_", "top").replace("accuracy", "top1"),
                        round(value, 5)) for name, value in metric.get_name_value())
        summary["weights_sha1"], summary["state_sha1"] = weights_digest(module), state_digest(module)
        if lr_of is not None:
            summary["learning_rate"] = float("%.6g" % lr_of(epoch + 1))
        if val_batches is not None:
            scores = evaluate(module, val_batches, progress=_validation_progress(progress))
            summary.update(val_top1_error=round(scores.top1_error, 3),
                           **{"val_top%d_error" % scores.k: round(scores.topk_error, 3)},
                           val_images=scores.count, val_images_per_second=round(scores.images_per_second, 2))
        with progress.writing():
            save(epoch + 1, summary)
        logger.info("%s %s", SUMMARY_TAG, json.dumps(summary))  # after the save: the log names committed epochs


def _validation_progress(progress):
    """The progress callback of validation; DPN_TEST_VALIDATION_DELAY_S (tests/test_stalls.py only) slows every
    batch down by that many seconds."""
    delay = float(os.environ.get("DPN_TEST_VALIDATION_DELAY_S", 0))

    def each_batch(_images):
        time.sleep(delay)
        progress()
    return each_batch
