"""Classify image files with a DPN checkpoint (ours or the authors' released files): the top classes of each.

    python tools/predict.py --model-prefix models/dpn92 --load-epoch 0 cat.jpg dog.png

The validation protocol (short side resized to S, bicubic, centre S x S crop, (pixel - mean) x 0.0167), then
the forward pass at S. On oneDNN CPUs the graph's CPU arrangement computes it (symbols/arrangement.py: the
checkpoint's parameters, the same outputs to float precision); --arrangement authors runs the authors' graph as
released. ImageNet-1k checkpoints print class names from data_lists/imagenet1k_classes.txt.
"""
import json
import sys

import mxnet as mx
import numpy as np

import symbols
from dpn_mxnet import arrangement_policy, checkpoint, cli, data, devices
from dpn_mxnet.checks import check_devices
from dpn_mxnet.evaluation import inference_module
from dpn_mxnet.packing import IMAGENET_CLASSES, read_class_table


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, ...)")
    cli.add_checkpoint(parser)
    cli.add_network(parser, num_classes=False)
    parser.add_argument("--size", type=int, help="input size S (default: the checkpoint's training size)")
    parser.add_argument("--resize", type=int, help="short side before the centre crop (default: S)")
    parser.add_argument("--top", type=int, default=5, help="classes printed per image")
    parser.add_argument("--classes", help="class index file, line i = class i: '<id>[<TAB><name>]' (default: "
                                          "%s for 1000 classes, class numbers otherwise)" % IMAGENET_CLASSES.name)
    cli.add_gpus(parser)
    arrangement_policy.add_argument(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--bad-records", default="stop", choices=data.BAD_RECORDS,
                        help="image files that cannot be decoded: stop with their name, or skip them")
    args = parser.parse_args(argv)
    for flag in ("size", "resize", "top", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error("--%s must be positive, got %d" % (flag.replace("_", "-"), getattr(args, flag)))
    try:
        args.contexts = devices.contexts(args.gpus)
        check_devices(args.contexts)
    except ValueError as err:
        parser.error(str(err))
    return args


def class_table(path, num_classes):
    """(id, name) per class: from ``path``, the ImageNet-1k index for 1000 classes, or the class numbers."""
    if path is None and num_classes != 1000:
        return [(str(i), str(i)) for i in range(num_classes)]
    path = path or IMAGENET_CLASSES
    table = read_class_table(path)
    if len(table) != num_classes:
        raise data.DataError("%s lists %d classes but the checkpoint has %d" % (path, len(table), num_classes))
    return table


def predictor(args, ckpt, spec, ctx, batch, size):
    """A function mapping a (batch, 3, size, size) array to class probabilities (batch, K) as a NumPy array."""
    arrangement = symbols.ARRANGEMENTS[arrangement_policy.choose(args.arrangement, ctx)].for_inference()
    symbol = mx.sym.softmax(symbols.logits(spec.network, spec.num_classes, spec.classifier, size,
                                           arrangement=arrangement))
    module = inference_module(symbol, ctx, [("data", (batch, 3, size, size))], None, ckpt.arg_params,
                              ckpt.aux_params, arrangement)

    def probabilities(batch):
        module.forward(mx.io.DataBatch([batch]), is_train=False)
        return module.get_outputs()[0].asnumpy()
    return probabilities


def predict(args):
    """([(image path, [(probability, class id, class name), ...] best first)] for every image, [report of each
    image skipped as undecodable])."""
    ckpt = checkpoint.load(args.model_prefix, args.load_epoch)
    spec = checkpoint.model_spec(ckpt, args.network)
    size = args.size or spec.train_size
    table = class_table(args.classes, spec.num_classes)
    ctx = args.contexts
    step = args.batch_size * len(ctx)
    skipped = []

    def skip(error):
        if args.bad_records == "stop":
            raise error
        print("skipping %s" % error, file=sys.stderr)
        skipped.append(str(error))

    paths = []
    for path in args.images:  # before any work: a first look at every file
        try:
            data.check_image_file(path)
            paths.append(path)
        except data.UndecodableImage as error:
            skip(error)
    forward = predictor(args, ckpt, spec, ctx, step, size)
    results = []
    for start in range(0, len(paths), step):
        loaded = []
        for path in paths[start:start + step]:
            try:
                loaded.append((path, data.load_image(path, size, args.resize)))
            except data.UndecodableImage as error:
                skip(error)
        if not loaded:
            continue
        names, images = zip(*loaded)
        padding = [images[0]] * (step - len(images))  # the module is bound for full batches
        for path, row in zip(names, forward(mx.nd.concat(*images, *padding, dim=0))):
            best = np.argsort(-row)[:args.top]
            results.append((path, [(float(row[k]), *table[k]) for k in best]))
    return results, skipped


def main(argv=None):
    args = parse_args(argv)
    try:
        results, skipped = predict(args)
    except (checkpoint.CheckpointError, data.DataError, ValueError) as err:
        sys.exit("error: %s" % err)
    for path, top in results:
        if args.json:
            print(json.dumps({"image": path, "top": [{"probability": round(p, 6), "class": class_id, "name": name}
                                                     for p, class_id, name in top]}))
        else:
            print("%s: %s" % (path, "; ".join("%.3f %s (%s)" % entry for entry in top)))
    if skipped:
        print("skipped %d undecodable image files (--bad-records skip; each named above)" % len(skipped),
              file=sys.stderr)


if __name__ == "__main__":
    main()
