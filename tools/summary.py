"""Model summary: parameters, fp32 size and multiply-adds of every DPN variant.

    python tools/summary.py [--json] [--num-classes 1000]
"""
import json

import numpy as np

import symbols
from dpn_mxnet import cli

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
identify = cli.lazy_import("dpn_mxnet.identify")

MIB = 2.0 ** 20


def parameter_counts(symbol, image_size=224):
    """(argument count, auxiliary count): elements of the learned tensors and of the BN running statistics."""
    return tuple(sum(int(np.prod(shape)) for shape in shapes.values())
                 for shapes in identify.parameter_shapes(symbol, (1, 3, image_size, image_size)))


def multiply_adds(symbol, image_size):
    """Multiply-adds of one image through the Convolution and FullyConnected layers."""
    graph = json.loads(symbol.tojson())["nodes"]
    internals = symbol.get_internals()
    _, shapes, _ = internals.infer_shape(data=(1, 3, image_size, image_size))
    shape_of = dict(zip(internals.list_outputs(), shapes))

    def output_shape(node):
        return shape_of[node["name"] if node["op"] == "null" else node["name"] + "_output"]

    total = 0
    for node in graph:
        if node["op"] in ("Convolution", "FullyConnected"):
            weight = output_shape(graph[node["inputs"][1][0]])
            total += int(np.prod(output_shape(node))) * int(np.prod(weight[1:]))
    return total


def summarize(network, num_classes=1000):
    """One row of the summary table as a dict."""
    train = symbols.get_symbol(network, num_classes)
    args, aux = parameter_counts(train)
    return {
        "model": network,
        "params": args,
        "aux": aux,
        "MiB": round(4 * (args + aux) / MIB, 2),
        "GMACs_224": round(multiply_adds(train, 224) / 1e9, 3),
        "GMACs_320_meanmax": round(multiply_adds(symbols.score_symbol(network, num_classes, image_size=320), 320)
                                   / 1e9, 3),
    }


def main():
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier width")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model instead of a table")
    args = parser.parse_args()
    if args.num_classes <= 0:
        parser.error("--num-classes must be positive, got %d" % args.num_classes)
    rows = [summarize(name, args.num_classes) for name in symbols.VARIANTS]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print("| model | params | fp32 args+aux (MiB) | GMACs @224 | GMACs @320 mean-max |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print("| %s | %s | %.2f | %.3f | %.3f |" % (r["model"], format(r["params"], ","), r["MiB"], r["GMACs_224"],
                                                   r["GMACs_320_meanmax"]))


if __name__ == "__main__":
    main()
