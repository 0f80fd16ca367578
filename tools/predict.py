"""Classify image files with a DPN checkpoint (ours or the authors' released files): the top classes of each.

    python tools/predict.py --model-prefix models/dpn92 --load-epoch 0 cat.jpg dog.png
    python tools/predict.py --model-prefix models/dpn92 --load-epoch 0 --size 320 --meanmax cat.jpg

The validation protocol (short side resized to S, bicubic, centre S x S crop, (pixel - mean) x 0.0167), then
the forward pass at S; --meanmax runs the authors' fully-convolutional test graph with mean-max pooling of the
class-score map (test/score.py --meanmax, one image at a time). On oneDNN CPUs the graph's CPU arrangement
computes it (symbols/arrangement.py: the checkpoint's parameters, the same outputs to float precision);
--arrangement authors runs the authors' graph as released. Class names are those the checkpoint carries (the
classes.txt of its training .rec), ImageNet-1k's for the authors' 1000-class models, or --classes.
"""
import json
import sys

from dpn_mxnet import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, ...)")
    cli.add_model(parser, num_classes=False)
    parser.add_argument("--meanmax", action="store_true", help="mean-max pooling of the class-score map")
    parser.add_argument("--resize", type=int, help="short side before the centre crop (default: S)")
    parser.add_argument("--top", type=int, default=5, help="classes printed per image")
    parser.add_argument("--classes", help="class index file, line i = class i: '<id>[<TAB><name>]' (default: the "
                                          "checkpoint's classes, ImageNet-1k's for 1000 classes, else numbers)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    cli.add_bad_records(parser, "image files")
    args = parser.parse_args(argv)
    cli.check_positive(parser, args, "size", "resize", "top", "batch_size")
    args.contexts = cli.contexts(parser, args)
    return args


def predictor(args, model, batch):
    """A function mapping a (batch, 3, S, S) array to class probabilities (batch, K) as a NumPy array."""
    import mxnet as mx

    import symbols

    def graph(spec, size, arrangement):
        if args.meanmax:
            return mx.sym.softmax(symbols.score_logits(spec.network, spec.num_classes, spec.classifier, size, True,
                                                       spec.train_size, arrangement=arrangement))
        return mx.sym.softmax(symbols.logits(spec.network, spec.num_classes, spec.classifier, size,
                                             arrangement=arrangement))
    module, _ = model.bind(graph, args.contexts, [("data", (batch, 3, model.size, model.size))], None,
                           args.arrangement)

    def probabilities(batch):
        module.forward(mx.io.DataBatch([batch]), is_train=False)
        return module.get_outputs()[0].asnumpy()
    return probabilities


def predict(args):
    """([(image path, [(probability, class id, class name), ...] best first)] for every image, [report of each
    image skipped as undecodable])."""
    import mxnet as mx
    import numpy as np

    from dpn_mxnet import data
    from dpn_mxnet.inference import load_model
    model = load_model(args.model_prefix, args.load_epoch, args.network, size=args.size, classes=args.classes)
    step = args.batch_size * len(args.contexts)
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
    forward = predictor(args, model, step)
    size, results = model.size, []
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
            results.append((path, [(float(row[k]), *model.classes[k]) for k in best]))
    return results, skipped


def shown(class_id, name):
    """A class as printed: its name, and its id after it where they differ (``goldfish (n01443537)``)."""
    return name if name == class_id else "%s (%s)" % (name, class_id)


def main(argv=None):
    args = parse_args(argv)
    try:
        results, skipped = predict(args)
    except ValueError as err:  # CheckpointError, DataError, UsageError
        sys.exit("error: %s" % err)
    for path, top in results:
        if args.json:
            print(json.dumps({"image": path, "top": [{"probability": round(p, 6), "class": class_id, "name": name}
                                                     for p, class_id, name in top]}))
        else:
            print("%s: %s" % (path, "; ".join("%.3f %s" % (p, shown(class_id, name)) for p, class_id, name in top)))
    if skipped:
        print("skipped %d undecodable image files (--bad-records skip; each named above)" % len(skipped),
              file=sys.stderr)


if __name__ == "__main__":
    main()
