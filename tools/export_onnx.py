"""Export a DPN checkpoint (ours or the authors') to ONNX and check it against MXNet with onnxruntime.

    python tools/export_onnx.py --prefix models/dpn68 --epoch 0 -o dpn68.onnx                  # training graph
    python tools/export_onnx.py --prefix models/dpn68 --epoch 0 --size 320 --meanmax -o s.onnx # test graph

The ONNX model maps normalised images (N, 3, S, S) to class logits (the mean-max pooled score map for the
test graph). The parity check runs both on the same batch and prints the largest absolute logit difference.
"""
import argparse
import json
import os
import sys

import mxnet as mx
import numpy as np

import symbols
from dpn_mxnet import checkpoint, cli
from dpn_mxnet.checks import check_output_folder


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--prefix", required=True, help="checkpoint prefix")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch")
    parser.add_argument("--model", help="network (default: read from the checkpoint)")
    parser.add_argument("--num-classes", type=int, help="classes (default: from the checkpoint)")
    parser.add_argument("--size", type=int, help="input size (default: the training size; another size, or "
                                                 "--meanmax, exports the fully-convolutional test graph)")
    parser.add_argument("--meanmax", action="store_true", help="test graph with mean-max pooling")
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the exported input and of the check")
    parser.add_argument("-o", "--out", required=True, help="ONNX file to write")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    args = parser.parse_args(argv)
    for flag in ("size", "batch_size", "num_classes"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error("--%s must be positive, got %d" % (flag.replace("_", "-"), getattr(args, flag)))
    return args


def export(ckpt, spec, size, meanmax, batch_size, out):
    """Write the ONNX file; returns (logits symbol, params) that it was made from."""
    if size == spec.train_size and not meanmax:
        graph = symbols.logits(spec.network, spec.num_classes, spec.classifier, size)
    else:
        graph = symbols.score_logits(spec.network, spec.num_classes, spec.classifier, size, meanmax, spec.train_size)
    names = set(graph.list_arguments()) | set(graph.list_auxiliary_states())
    params = {k: v for k, v in dict(ckpt.arg_params, **ckpt.aux_params).items() if k in names}
    mx.onnx.export_model(graph, params, in_shapes=[(batch_size, 3, size, size)], in_types=[np.float32],
                         onnx_file_path=out)
    constants_out_of_inputs(out)
    return graph, params


def constants_out_of_inputs(path):
    """mx.onnx lists every weight as a graph input too; drop those so runtimes may fold them as constants."""
    import onnx

    model = onnx.load(path)
    weights = {w.name for w in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.save(model, path)


def parity(graph, params, out, batch_size, size, seed=0):
    """Largest |MXNet logit - onnxruntime logit| on one random batch of normalised-image statistics."""
    import onnxruntime

    images = np.random.RandomState(seed).normal(0, 1, (batch_size, 3, size, size)).astype(np.float32)
    inputs = {k: v for k, v in params.items() if k in graph.list_arguments()}
    inputs["data"] = mx.nd.array(images)
    aux = {k: v for k, v in params.items() if k in graph.list_auxiliary_states()}
    expected = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward(is_train=False)[0].asnumpy()
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.abs(got - expected).max())


def main(argv=None):
    args = parse_args(argv)
    try:
        check_output_folder(os.path.dirname(os.path.abspath(args.out)), "-o/--out")
        ckpt = checkpoint.load(args.prefix, args.epoch)
        spec = checkpoint.model_spec(ckpt, args.model, args.num_classes)
        size = args.size or spec.train_size
        graph, params = export(ckpt, spec, size, args.meanmax, args.batch_size, args.out)
    except (checkpoint.CheckpointError, ValueError) as err:
        sys.exit("error: %s" % err)
    report = {"onnx": args.out, "size": size, "meanmax": args.meanmax}
    if not args.no_check:
        report["max_abs_logit_diff"] = parity(graph, params, args.out, args.batch_size, size)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
