"""Synthetic-data speed of a DPN in MXNet: images per second (median step) and peak memory, as one JSON line.

train: Module forward, backward and SGD update (momentum 0.9, wd 1e-4), as train/train_imagenet.py runs it.
infer: the 224 forward pass in inference mode, as tools/predict.py runs it. score: the fully-convolutional
mean-max test graph at 320, as test/score.py runs it. By default each uses the arrangement the entry points choose:
cpu (symbols/arrangement.py) on oneDNN CPUs, the authors' graph on GPUs.
The MXNet side of ``tools/dev/bench_side_by_side.py``; ``tools/dev/bench_timm.py`` is the timm side.
"""
import hashlib
import json
import os
import sys

import numpy as np

import symbols
from dpn_mxnet import arrangement_policy, benchmarking, cli

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
mx = cli.lazy_import("mxnet")
devices, evaluation, fit, identify = (cli.lazy_import("dpn_mxnet." + name)
                                      for name in ("devices", "evaluation", "fit", "identify"))


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    benchmarking.add_arguments(parser)
    cli.add_gpus(parser)
    arrangement_policy.add_argument(parser)
    args = benchmarking.check_arguments(parser, parser.parse_args(argv))
    try:
        symbols.resolve(args.network)
        args.contexts = devices.contexts(args.gpus)
        args.arrangement = arrangement_policy.choose(args.arrangement, args.contexts)
    except ValueError as err:
        parser.error(str(err))
    return args


def graph_arrangement(args):
    """The arrangement of the graph that ``--mode``'s entry point binds: the chosen one to train, its inference
    form to infer and score."""
    arrangement = symbols.ARRANGEMENTS[args.arrangement]
    return arrangement if args.mode == "train" else arrangement.for_inference()


def build_symbol(args):
    arrangement = graph_arrangement(args)
    if args.mode == "score":
        return symbols.score_symbol(args.network, image_size=args.size, arrangement=arrangement)
    if args.mode == "infer":  # the logits, as tools/predict.py builds them
        return mx.sym.SoftmaxOutput(symbols.logits(args.network, image_size=args.size, arrangement=arrangement),
                                    name="softmax")
    return symbols.get_symbol(args.network, image_size=args.size, arrangement=arrangement)


def random_params(symbol, data_shape, initializer):
    """(arguments, auxiliary states) of ``symbol`` for inputs of ``data_shape``, as ``initializer`` sets them."""
    attrs = symbol.attr_dict()
    params = tuple({name: mx.nd.zeros(shape) for name, shape in shapes.items()}
                   for shapes in identify.parameter_shapes(symbol, data_shape))
    for arrays in params:
        for name, array in arrays.items():
            initializer(mx.init.InitDesc(name, attrs.get(name)), array)
    return params


def graph_digest(symbol):
    """A short SHA-1 of a graph's operators, attributes, connections and variable names (not the operators' names,
    which MXNet numbers per process): names the graph a run bound."""
    nodes = json.loads(symbol.tojson())["nodes"]
    structure = [(n["op"], n["name"] if n["op"] == "null" else "", n.get("attrs", {}), n["inputs"]) for n in nodes]
    return hashlib.sha1(json.dumps(structure, sort_keys=True).encode()).hexdigest()[:16]


def bound_module(args, symbol, batch):
    """A Module with random parameters, bound for one synthetic batch of ``batch`` images as the entry point of
    ``--mode`` binds it."""
    data_shapes = [("data", (batch, 3, args.size, args.size))]
    label_shapes = [("softmax_label", (batch,))]
    initializer = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    arrangement = graph_arrangement(args)
    if args.mode != "train":
        return evaluation.inference_module(symbol, args.contexts, data_shapes, label_shapes,
                                *random_params(symbol, data_shapes[0][1], initializer), arrangement)
    module = mx.mod.Module(symbol, context=args.contexts)
    with arrangement_policy.bind_settings(arrangement):
        module.bind(data_shapes=data_shapes, label_shapes=label_shapes)
    module.init_params(initializer)
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    return module


def make_step(args, module, batch):
    """One timed step; it returns once MXNet's asynchronous engine has finished the work."""
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.uniform(-1, 1, (batch, 3, args.size, args.size)))
    label = mx.nd.array(rng.randint(0, 1000, batch))
    batch_data = mx.io.DataBatch([data], [label])

    def infer():
        module.forward(batch_data, is_train=False)
        module.get_outputs()[0].wait_to_read()

    return (lambda: fit.train_step(module, batch_data, wait=True)) if args.mode == "train" else infer


def main(argv=None):
    args = parse_args(argv)
    batch = args.batch_size * len(args.contexts)
    try:
        symbol = build_symbol(args)
    except ValueError as err:  # a size the model cannot take
        sys.exit("error: --size: %s" % err)
    module = bound_module(args, symbol, batch)
    times = benchmarking.step_times(make_step(args, module, batch), args.warmup, args.repeats)
    extra = {"gpu_mb": round(devices.peak_memory_mb(args.contexts), 1)} if args.gpus else {}
    benchmarking.report("mxnet", args, batch, times, devices=len(args.contexts), arrangement=args.arrangement,
                        graph_sha1=graph_digest(symbol),
                        threads=os.environ.get("OMP_NUM_THREADS"), versions="mxnet %s" % mx.__version__, **extra)


if __name__ == "__main__":
    main()
