"""Checks that every entry point runs before any work starts, and one-line descriptions of errors.

Each check raises ``UsageError`` with one line naming the flag or file and what was expected; entry points turn it
into ``parser.error`` (exit status 2) or ``error: ...`` (exit status 1).
"""
import contextlib
import math
import os
import shutil
import sys
import tempfile

# What the launcher (tools/launch.py, through dmlc_tracker) sets for every process of a distributed job.
LAUNCHER_ENVIRONMENT = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_WORKER", "DMLC_NUM_SERVER")


class UsageError(ValueError):
    """A flag value or output path that cannot work; the message is one line."""


class DataError(ValueError):
    """A data file or data option that cannot be used; the message is one line naming the file or option."""


def cuda_available():
    """Whether this MXNet build has CUDA and sees at least one GPU."""
    import mxnet as mx
    return mx.runtime.Features().is_enabled("CUDA") and mx.context.num_gpus() > 0


def check_devices(contexts, dtype="float32", flag="--gpus"):
    """GPU contexts need a CUDA build with GPUs; float16 needs GPUs (MXNet's CPU operators lack it)."""
    import mxnet as mx
    gpu_ids = [c.device_id for c in contexts if c.device_type == "gpu"]
    if gpu_ids and not cuda_available():
        built = "has no CUDA support (CPU build)" if not mx.runtime.Features().is_enabled("CUDA") else "sees no GPU"
        raise UsageError("%s %s: this MXNet %s; leave %s empty to run on the CPU"
                         % (flag, ",".join(map(str, gpu_ids)), built, flag))
    if gpu_ids and max(gpu_ids) >= mx.context.num_gpus():
        raise UsageError("%s: GPU %d does not exist (%d GPUs visible)" % (flag, max(gpu_ids), mx.context.num_gpus()))
    if dtype == "float16" and not gpu_ids:
        raise UsageError("--dtype float16 needs GPUs (--gpus): MXNet's CPU operators do not train in half precision")


def check_launched(kv_store):
    """A dist kvstore needs the environment that tools/launch.py gives every process of the job."""
    missing = [name for name in LAUNCHER_ENVIRONMENT if name not in os.environ]
    if kv_store.startswith("dist") and missing:
        raise UsageError("--kv-store %s: not started by tools/launch.py (%s not set); run it as "
                         "python tools/launch.py -n N ... python train/train_imagenet.py --kv-store %s ..."
                         % (kv_store, missing[0], kv_store))


def check_positive(flag, value, zero=False):
    """``value`` is a finite number > 0, or >= 0 with ``zero`` (None passes: the flag was not given)."""
    if value is not None and not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise UsageError("%s must be a finite number %s 0, got %s" % (flag, ">=" if zero else ">", value))
    return value


def check_output_folder(path, what, create=False):
    """The folder ``path`` exists (or, with ``create``, can be made) and accepts a new file; returns ``path``."""
    path = os.path.abspath(path or ".")
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise UsageError("%s: cannot create the folder %s (%s)" % (what, path, error.strerror)) from None
    if not os.path.isdir(path):
        raise UsageError("%s: %s is not an existing folder" % (what, path))
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError("%s: cannot write in %s (%s)" % (what, path, error.strerror)) from None
    return path


@contextlib.contextmanager
def removed_on_failure(folder):
    """Run the block; if it raises, delete what it added to ``folder`` (the folder too, if the block made it), so that
    a failed command leaves nothing behind. Files it replaced stay replaced."""
    folder = os.path.abspath(folder)
    existed = os.path.isdir(folder)
    before = set(os.listdir(folder)) if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif os.path.isdir(folder):
            for name in set(os.listdir(folder)) - before:
                path = os.path.join(folder, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        raise


def describe_error(error):
    """One line for any exception: MXNet's C++ errors shortened to their message (no stack trace)."""
    mxnet = sys.modules.get("mxnet")  # an MXNet error needs MXNet loaded
    if mxnet is not None and isinstance(error, mxnet.base.MXNetError):
        lines = [line for line in str(error).splitlines()
                 if line.strip() and not line.startswith(("  ", "Stack", "Traceback"))]
        return " ".join(lines[-1].split()) if lines else type(error).__name__
    text = " ".join(str(error).split())
    if isinstance(error, (OSError, ValueError)) and text:  # ours (DataError, CheckpointError, ...) included
        return text
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
