"""Synthetic-data speed of a DPN in MXNet: images per second (median step) and peak memory, as one JSON line.

train: Module forward, backward and SGD update (momentum 0.9, wd 1e-4), as the training script runs it: on
CPUs with the CPU training variant (``symbols.cpu_fast``) and its memory-planner setting. infer: the authors'
graph in inference mode. score: the fully-convolutional mean-max test graph at 320. The MXNet side of
``tools/bench_side_by_side.py``; ``tools/bench_timm.py`` is the timm side.
"""
import argparse
import os
import sys

import mxnet as mx
import numpy as np

import symbols
from symbols.cpu_fast import BIND_ENVIRONMENT, use_cpu_fast
from tools import bench_common

VARIANTS = {"exact": False, "fast": True, "lean": "lean"}  # --variant -> get_symbol's cpu_fast


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench_common.add_arguments(parser)
    parser.add_argument("--gpus", default="", help="GPU ids such as 0,1; empty runs on the CPU")
    parser.add_argument("--variant", choices=["auto"] + list(VARIANTS), default="auto",
                        help="graph: exact (the authors'), fast (the CPU training variant, same parameters), lean "
                             "(that variant with less memory and a little less speed) or auto (fast for training "
                             "on CPUs, exact otherwise)")
    args = bench_common.check_arguments(parser, parser.parse_args(argv))
    try:
        symbols.resolve(args.model)
        args.contexts = [mx.gpu(int(i)) for i in args.gpus.split(",")] if args.gpus.strip() else [mx.cpu()]
    except ValueError as err:
        parser.error("--model/--gpus: %s" % err)
    if args.variant in ("fast", "lean") and not use_cpu_fast(args.contexts):
        parser.error("--variant %s needs CPU contexts and MXNet's oneDNN backend" % args.variant)
    if args.variant == "auto":
        args.variant = "fast" if args.mode == "train" and use_cpu_fast(args.contexts) else "exact"
    return args


def build_symbol(args):
    if args.mode == "score":
        return symbols.score_symbol(args.model, image_size=args.size, cpu_fast=VARIANTS[args.variant])
    return symbols.get_symbol(args.model, image_size=args.size, cpu_fast=VARIANTS[args.variant])


def bound_module(args, symbol, batch):
    """A Module with random parameters, bound for one synthetic batch of ``batch`` images."""
    module = mx.mod.Module(symbol, context=args.contexts)
    module.bind(data_shapes=[("data", (batch, 3, args.size, args.size))],
                label_shapes=[("softmax_label", (batch,))], for_training=args.mode == "train")
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    if args.mode == "train":
        module.init_optimizer(optimizer="sgd",
                              optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    return module


def make_step(args, module, batch):
    """One timed step; it returns once MXNet's asynchronous engine has finished the work."""
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.uniform(-1, 1, (batch, 3, args.size, args.size)))
    label = mx.nd.array(rng.randint(0, 1000, batch))
    batch_data = mx.io.DataBatch([data], [label])

    def train():
        module.forward_backward(batch_data)
        module.update()
        mx.nd.waitall()

    def infer():
        module.forward(batch_data, is_train=False)
        module.get_outputs()[0].wait_to_read()

    return train if args.mode == "train" else infer


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "train" and use_cpu_fast(args.contexts):
        for name, value in BIND_ENVIRONMENT.items():  # as the training script sets them (read at binding)
            os.environ.setdefault(name, value)
    batch = args.batch_size * len(args.contexts)
    try:
        symbol = build_symbol(args)
    except ValueError as err:  # a size the model cannot take
        sys.exit("error: --size: %s" % err)
    module = bound_module(args, symbol, batch)
    times = bench_common.step_times(make_step(args, module, batch), args.warmup, args.repeats)
    extra = {}
    if args.gpus:  # MXNet's pool keeps what it allocated, so the memory in use now is the peak
        extra["gpu_mb"] = round(max(total - free for free, total in
                                    (mx.context.gpu_memory_info(c.device_id) for c in args.contexts)) / 2 ** 20, 1)
    bench_common.report("mxnet", args, batch, times, devices=len(args.contexts), variant=args.variant,
                        threads=os.environ.get("OMP_NUM_THREADS"), versions="mxnet %s" % mx.__version__, **extra)


if __name__ == "__main__":
    main()
