"""Score a DPN checkpoint (ours or the authors' released files) on a validation .rec.

    python test/score.py --model-prefix models/dpn92 --load-epoch 0 --data-val val.rec --size 320 --meanmax

The authors' protocol: short side resized to S, centre crop S x S, bicubic, (pixel - mean) x 0.0167; the
fully-convolutional test graph (symbols.score_symbol) with mean-max pooling of the class-score map. On oneDNN
CPUs the graph's CPU arrangement computes it (the same outputs to float precision); --arrangement authors runs
the authors' graph as released. The top-k error counts an image as a hit when its label is among the k best
classes, k = 5 or the number of classes when fewer.
"""
import json
import sys
import tempfile

from dpn_mxnet import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    cli.add_model(parser)
    parser.add_argument("--data-val", required=True, help="validation .rec (its .idx beside it)")
    parser.add_argument("--meanmax", action="store_true", help="mean-max pooling of the class-score map")
    parser.add_argument("--ten-crop", action="store_true",
                        help="average 10 crops (corners, centre, mirrored) taken from the image resized to --resize")
    parser.add_argument("--resize", type=int, help="short side before 10-crop (default: S x 256 / 224)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument("--data-nthreads", type=int, default=4, help="decode threads")
    cli.add_bad_records(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table row")
    args = parser.parse_args(argv)
    cli.check_positive(parser, args, "batch_size", "size", "resize", "num_classes")
    args.contexts = cli.contexts(parser, args)
    return args


def build(args, scratch):
    """(module bound for inference, the model, validation batches, crops per image, .rec read, skipped records,
    name of the arrangement)."""
    import symbols
    from dpn_mxnet import data
    from dpn_mxnet.inference import load_model
    model = load_model(args.model_prefix, args.load_epoch, args.network, args.num_classes, args.size)
    size = model.size
    rec, skipped = data.readable_rec(args.data_val, model.spec.num_classes, args.bad_records, scratch)
    for report in skipped:
        print("skipping %s" % report, file=sys.stderr)
    if args.ten_crop:
        crops = 10
        batches = data.ten_crop_iter(rec, args.batch_size, size, args.resize or size * 256 // 224)
    else:
        crops = 1
        batches = data.val_iter(rec, args.batch_size, size, threads=args.data_nthreads)

    def graph(spec, size, arrangement):
        return symbols.score_symbol(spec.network, spec.num_classes, spec.classifier, size, args.meanmax,
                                    spec.train_size, arrangement=arrangement)
    module, name = model.bind(graph, args.contexts, batches.provide_data, batches.provide_label, args.arrangement)
    return module, model, batches, crops, rec, skipped, name


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    import symbols
    from dpn_mxnet import data
    from dpn_mxnet.evaluation import evaluate
    with tempfile.TemporaryDirectory(prefix="score-") as scratch:
        try:
            module, model, batches, crops, rec, skipped, arrangement = build(args, scratch)
        except ValueError as err:  # CheckpointError, DataError, UsageError, a size the graph cannot take
            sys.exit("error: %s" % err)
        print("scoring %s at %dx%d%s" % (args.data_val, model.size, model.size,
                                         " (the checkpoint's training size)" if args.size is None else ""),
              file=sys.stderr)
        with tqdm(total=data.num_records(rec), unit="img", file=sys.stderr, disable=None) as bar:
            try:
                scores = evaluate(module, batches, crops, progress=lambda done: bar.update(done - bar.n))
            except data.DataError as err:
                sys.exit("error: %s" % err)
    if skipped:
        print("skipped %d undecodable records of %s (--bad-records skip; each named above)"
              % (len(skipped), args.data_val), file=sys.stderr)
    spec = model.spec
    row = {"model": spec.network if spec.network in symbols.VARIANTS else "custom", "size": model.size,
           "meanmax": args.meanmax, "ten_crop": args.ten_crop, "arrangement": arrangement,
           "top1_error": round(scores.top1_error, 3), "top%d_error" % scores.k: round(scores.topk_error, 3),
           "k": scores.k, "images": scores.count, "images_per_second": round(scores.images_per_second, 2)}
    if args.json:
        print(json.dumps(row))
        return
    print("| model | size | mean-max | arrangement | top-1 err (%%) | top-%d err (%%) | images | img/s |" % scores.k)
    print("|---|---:|---|---|---:|---:|---:|---:|")
    print("| %s | %d | %s | %s | %.2f | %.2f | %d | %.1f |" % (
        row["model"], model.size, "yes" if args.meanmax else "no", arrangement, scores.top1_error,
        scores.topk_error, scores.count, scores.images_per_second))


if __name__ == "__main__":
    main()
