"""Which graph arrangement a run binds (``--arrangement``), and the settings in force while a graph is bound.

The CPU arrangements (symbols/arrangement.py) are arranged for oneDNN, MXNet's CPU backend; elsewhere, and in
half precision, the authors' graph runs. Shared by training, scoring, prediction and the benchmark.
"""
import contextlib
import os

import symbols

from . import environment
from .checks import UsageError

CHOICES = ("auto",) + tuple(symbols.ARRANGEMENTS)

# MXNet's memory planner lets tensors share a buffer when their sizes are within this factor (default 16); it
# reads the variable when a graph is bound. 2 plans less memory for DPN training (docs/cpu_arrangement.md).
BIND_ENVIRONMENT = {"NNVM_EXEC_MATCH_RANGE": "2"}


def add_argument(parser):
    """The --arrangement option of every entry point that binds a graph."""
    parser.add_argument("--arrangement", default="auto", choices=CHOICES,
                        help="the graph's arrangement of operators, each with the authors' parameters and "
                             "function: authors (their graph), cpu (arranged for oneDNN, MXNet's CPU backend), "
                             "cpu-lean (that in less memory, slower); auto: cpu for float32 on oneDNN CPUs, else "
                             "authors")


def onednn_cpus(contexts):
    """Whether ``contexts`` are all CPUs and MXNet runs oneDNN on them."""
    import mxnet as mx
    return (all(ctx.device_type == "cpu" for ctx in contexts) and mx.runtime.Features().is_enabled("MKLDNN")
            and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0")


def choose(choice, contexts, dtype="float32"):
    """The name (a key of ``symbols.ARRANGEMENTS``) of the arrangement that ``--arrangement choice`` binds on
    ``contexts`` in ``dtype``: "auto" takes cpu where it helps (float32 on oneDNN CPUs), authors elsewhere."""
    if choice not in CHOICES:
        raise UsageError("--arrangement: expected one of %s, got %r" % (", ".join(CHOICES), choice))
    if choice == "auto":
        return "cpu" if onednn_cpus(contexts) and dtype == "float32" else "authors"
    if choice != "authors" and not onednn_cpus(contexts):
        raise UsageError("--arrangement %s needs CPU contexts and MXNet's oneDNN backend" % choice)
    if choice != "authors" and dtype != "float32":
        raise UsageError("--arrangement %s runs in float32 only, not %s" % (choice, dtype))
    return choice


@contextlib.contextmanager
def bind_settings(arrangement):
    """The environment for binding a graph in ``arrangement`` (a symbols.Arrangement): BIND_ENVIRONMENT for the
    CPU arrangements, except variables the user has set; the environment as it was afterwards."""
    with environment.defaults({} if arrangement == symbols.AUTHORS else BIND_ENVIRONMENT):
        yield
