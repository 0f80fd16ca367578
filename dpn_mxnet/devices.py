"""The devices a run uses (``--gpus``) and the memory it has taken on them: shared by training, scoring,
prediction and the benchmarks."""
import mxnet as mx

from dpn_mxnet import benchmarking


def contexts(gpus):
    """MXNet contexts for a ``--gpus`` value: GPU ids such as "0,1", or "" for the CPU."""
    if not gpus.strip():
        return [mx.cpu()]
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
