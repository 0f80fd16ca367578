"""The devices a run uses (``--gpus``) and the memory it has taken on them: shared by training, scoring,
prediction and the benchmarks."""
import os

import mxnet as mx

from dpn_mxnet import benchmarking

# Test hook: with an empty --gpus, this many CPU contexts (mx.cpu(0), mx.cpu(1), ...) stand in for several GPUs,
# so that the multi-device path (data split over contexts, kvstore local or device) runs on a CPU-only machine.
CPU_DEVICES_ENV = "DPN_CPU_DEVICES"


def contexts(gpus):
    """MXNet contexts for a ``--gpus`` value: GPU ids such as "0,1", or "" for the CPU (``$DPN_CPU_DEVICES`` CPU
    contexts when that is set)."""
    if not gpus.strip():
        count = os.environ.get(CPU_DEVICES_ENV, "1")
        if not count.isdigit() or int(count) < 1:
            raise ValueError("%s: expected a number of CPU contexts of 1 or more, got %r" % (CPU_DEVICES_ENV, count))
        return [mx.cpu(i) for i in range(int(count))]
    try:
        ids = [int(i) for i in gpus.split(",")]
    except ValueError:
        raise ValueError("--gpus: expected comma-separated GPU ids such as 0,1, got %r" % gpus) from None
    if min(ids) < 0 or len(set(ids)) != len(ids):
        raise ValueError("--gpus: expected distinct GPU ids of 0 or more, got %r" % gpus)
    return [mx.gpu(i) for i in ids]


def peak_memory_mb(ctx):
    """MB (2**20 bytes) in use on the busiest GPU of ``ctx`` (MXNet's pool keeps what it allocated, so that is
    the peak), or this process's peak resident memory on CPUs."""
    if ctx[0].device_type == "gpu":
        return max((total - free) / 2 ** 20 for free, total in (mx.context.gpu_memory_info(c.device_id) for c in ctx))
    return benchmarking.peak_memory_mb()
