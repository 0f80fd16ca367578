"""Export a DPN checkpoint (ours or the authors') to ONNX and check it against MXNet with onnxruntime.

    python tools/export_onnx.py --model-prefix models/dpn68 --load-epoch 0 -o dpn68.onnx                  # training graph
    python tools/export_onnx.py --model-prefix models/dpn68 --load-epoch 0 --size 320 --meanmax -o s.onnx # test graph

The ONNX model maps a batch of normalised images, input ``image`` (N, 3, S, S) with any N, to class logits,
output ``logits`` (the mean-max pooled score map for the test graph); softmax gives probabilities. The
preprocessing is not part of the model: the tool prints it, and the file carries it as metadata. The parity
check runs both on the same batch and prints the largest absolute logit difference. Another --size than the
training size, or --meanmax, exports the fully-convolutional test graph. The class names (the checkpoint's, see
tools/predict.py) are in the metadata too, as a JSON list under ``classes``.
"""
import json
import os
import sys

from dpn_mxnet import cli

INPUT, OUTPUT = "image", "logits"


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    cli.add_model(parser, gpus=False, arrangement=False)
    parser.add_argument("--meanmax", action="store_true", help="test graph with mean-max pooling")
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the parity check (the exported batch "
                                                                  "dimension takes any size)")
    parser.add_argument("-o", "--out", required=True, help="ONNX file to write")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    args = parser.parse_args(argv)
    cli.check_positive(parser, args, "size", "batch_size", "num_classes")
    return args


def preprocessing(size):
    """What a consumer of the ONNX file must do to an image first, in words."""
    from dpn_mxnet import data
    return ("RGB, short side resized to %d (bicubic), centre %dx%d crop, (pixel - (%s)) * %s per channel, float32 "
            "NCHW" % (size, size, size, ", ".join(map(str, data.MEAN_RGB)), data.SCALE))


def export(model, meanmax, out):
    """Write the ONNX file of ``model`` (an ``inference.Model``); returns (logits symbol, params) that it was made
    from."""
    import mxnet as mx
    import numpy as np

    import symbols
    ckpt, spec, size = model.checkpoint, model.spec, model.size
    if size == spec.train_size and not meanmax:
        graph = symbols.logits(spec.network, spec.num_classes, spec.classifier, size)
    else:
        graph = symbols.score_logits(spec.network, spec.num_classes, spec.classifier, size, meanmax, spec.train_size)
    names = set(graph.list_arguments()) | set(graph.list_auxiliary_states())
    params = {k: v for k, v in dict(ckpt.arg_params, **ckpt.aux_params).items() if k in names}
    mx.onnx.export_model(graph, params, in_shapes=[(1, 3, size, size)], in_types=[np.float32], onnx_file_path=out,
                         dynamic=True, dynamic_input_shapes=[(None, 3, size, size)])
    finish(out, size, model.classes)
    return graph, params


def finish(path, size, classes):
    """Drop the weights from the graph inputs (mx.onnx lists them there too, which keeps runtimes from folding
    them as constants), name the input and the output, and record the preprocessing and the class names ((id,
    name) per class) as metadata."""
    import onnx

    model = onnx.load(path)
    weights = {w.name for w in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    renames = {inputs[0].name: INPUT, model.graph.output[0].name: OUTPUT}
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(classes)
    onnx.helper.set_model_props(model, {"preprocessing": preprocessing(size),
                                        "classes": json.dumps([name for _, name in classes])})
    onnx.save(model, path)


def parity(graph, params, out, batch_size, size, seed=0):
    """Largest |MXNet logit - onnxruntime logit| on one random batch of normalised-image statistics."""
    import mxnet as mx
    import numpy as np
    import onnxruntime

    images = np.random.RandomState(seed).normal(0, 1, (batch_size, 3, size, size)).astype(np.float32)
    inputs = {k: v for k, v in params.items() if k in graph.list_arguments()}
    inputs["data"] = mx.nd.array(images)
    aux = {k: v for k, v in params.items() if k in graph.list_auxiliary_states()}
    expected = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null").forward(is_train=False)[0].asnumpy()
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: images})[0]
    return float(np.abs(got - expected).max())


def main(argv=None):
    args = parse_args(argv)
    from dpn_mxnet.checks import check_output_folder
    from dpn_mxnet.inference import load_model
    try:
        check_output_folder(os.path.dirname(os.path.abspath(args.out)), "-o/--out")
        model = load_model(args.model_prefix, args.load_epoch, args.network, args.num_classes, args.size)
        graph, params = export(model, args.meanmax, args.out)
    except ValueError as err:  # CheckpointError, DataError, UsageError, a size the graph cannot take
        sys.exit("error: %s" % err)
    size = model.size
    print("note: preprocessing is not part of the model; give input %r: %s" % (INPUT, preprocessing(size)))
    report = {"onnx": args.out, "size": size, "meanmax": args.meanmax, "input": INPUT, "output": OUTPUT,
              "preprocessing": preprocessing(size)}
    if not args.no_check:
        report["max_abs_logit_diff"] = parity(graph, params, args.out, args.batch_size, size)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
