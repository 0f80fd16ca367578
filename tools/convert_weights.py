"""Convert DPN weights between timm's state dict (.safetensors) and this project's checkpoints, both ways.

    python tools/convert_weights.py to-mxnet model.safetensors --model-prefix models/dpn92
    python tools/convert_weights.py to-timm --model-prefix models/dpn92 --load-epoch 0 -o dpn92.safetensors

to-mxnet writes an ordinary checkpoint, P-0000.params with P-symbol.json and P-model.json, that scoring,
prediction, export, BN refinement and --pretrained read unchanged. The network and the class count are read
from the tensors unless given; every tensor must be used exactly once, in the shape the network needs.
.pth files are read and written too where PyTorch is installed.
"""
import json
import os
import sys

import symbols
from dpn_mxnet import cli
from dpn_mxnet.checks import UsageError, check_output_folder, check_positive

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
checkpoint, identify, timm_weights = (cli.lazy_import("dpn_mxnet." + name)
                                      for name in ("checkpoint", "identify", "timm_weights"))

CLASSIFIERS = ("fc6", "fc6-1k")


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{to-mxnet,to-timm}")
    to_mxnet = commands.add_parser("to-mxnet", help="timm state dict -> checkpoint P-0000.params")
    to_mxnet.add_argument("timm_file", help="timm's DPN weights, e.g. model.safetensors from dpn92.mx_in1k")
    to_mxnet.add_argument("--model-prefix", required=True,
                          help="checkpoint prefix to write, e.g. models/dpn92 for models/dpn92-0000.params")
    to_mxnet.add_argument("--network", help="variant name or JSON DPN configuration (default: identified from the "
                                            "tensors)")
    to_mxnet.add_argument("--num-classes", type=int, help="classes (default: the classifier's rows)")
    to_mxnet.add_argument("--classifier", choices=CLASSIFIERS,
                          help="the classifier's name in the checkpoint (default: the authors' choice, fc6-1k for "
                               "DPN-68b with 1000 classes, fc6 otherwise)")
    to_timm = commands.add_parser("to-timm", help="checkpoint -> timm state dict")
    to_timm.add_argument("--model-prefix", required=True, help="checkpoint prefix, e.g. models/dpn92")
    to_timm.add_argument("--load-epoch", type=int, default=0, help="checkpoint epoch to read (default: 0)")
    to_timm.add_argument("--network", help="variant name or JSON DPN configuration (default: from the checkpoint)")
    to_timm.add_argument("--num-classes", type=int, help="classes (default: from the checkpoint)")
    to_timm.add_argument("-o", "--out", required=True, help="file to write: .safetensors (or .pth with PyTorch)")
    args = parser.parse_args(argv)
    try:
        check_positive("--num-classes", args.num_classes)
    except UsageError as err:
        parser.error(str(err))
    return args


def refuse_overwrite(path):
    if os.path.exists(path):
        raise checkpoint.CheckpointError("%s exists; remove it or write elsewhere" % path)


def to_mxnet(args):
    """Convert, write the checkpoint and return a summary."""
    check_output_folder(os.path.dirname(os.path.abspath(args.model_prefix)), "--model-prefix", create=True)
    refuse_overwrite(checkpoint.params_path(args.model_prefix, 0))
    state = timm_weights.read_state(args.timm_file)
    network, num_classes, classifier, arg_params, aux_params = timm_weights.from_timm(
        state, args.network, args.num_classes, args.classifier, source=args.timm_file)
    checkpoint.save_model_info(args.model_prefix, {
        "network": network if network in symbols.VARIANTS else symbols.resolve(network).to_json(),
        "num_classes": num_classes, "classifier": classifier, "image_size": 224})
    checkpoint.save(args.model_prefix, 0, symbols.get_symbol(network, num_classes, classifier), arg_params,
                    aux_params)
    return {"wrote": checkpoint.params_path(args.model_prefix, 0), "network": network, "num_classes": num_classes,
            "classifier": classifier, "tensors": len(state)}


def to_timm(args):
    check_output_folder(os.path.dirname(os.path.abspath(args.out)), "-o/--out")
    refuse_overwrite(args.out)
    ckpt = checkpoint.load(args.model_prefix, args.load_epoch)
    spec = identify.model_spec(ckpt, args.network, args.num_classes)
    state = timm_weights.to_timm(ckpt.arg_params, ckpt.aux_params, spec.network, spec.num_classes, spec.classifier,
                                 source=checkpoint.params_path(args.model_prefix, args.load_epoch))
    timm_weights.write_state(args.out, state)
    return {"wrote": args.out, "network": spec.network, "num_classes": spec.num_classes,
            "classifier": spec.classifier, "tensors": len(state)}


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = (to_mxnet if args.command == "to-mxnet" else to_timm)(args)
    except (checkpoint.CheckpointError, ValueError) as err:
        sys.exit("error: %s" % err)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
