"""Score a DPN checkpoint (ours or the authors' released files) on a validation .rec.

    python test/score.py --prefix models/dpn92 --epoch 0 --data-val val.rec --size 320 --meanmax

The authors' protocol: short side resized to S, centre crop S x S, bicubic, (pixel - mean) x 0.0167; the
fully-convolutional test graph (symbols.score_symbol) with mean-max pooling of the class-score map. On oneDNN
CPUs the graph's CPU arrangement computes it (the same outputs to float precision); --arrangement authors runs
the authors' graph as released.
"""
import argparse
import json
import sys
import tempfile

from tqdm import tqdm

import symbols
from dpn_mxnet import arrangement_policy, checkpoint, cli, data, devices
from dpn_mxnet.checks import check_devices
from dpn_mxnet.evaluation import evaluate, inference_module


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--prefix", required=True, help="checkpoint prefix, e.g. models/dpn92 for dpn92-0000.params")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch")
    parser.add_argument("--model", help="network (default: from the checkpoint: our -model.json, else by matching "
                                        "its tensors against %s)" % ", ".join(symbols.VARIANTS))
    parser.add_argument("--num-classes", type=int, help="classes (default: from the checkpoint)")
    parser.add_argument("--data-val", required=True, help="validation .rec (its .idx beside it)")
    parser.add_argument("--size", type=int, default=224, help="test size S (224, 320, ...)")
    parser.add_argument("--meanmax", action="store_true", help="mean-max pooling of the class-score map")
    parser.add_argument("--ten-crop", action="store_true",
                        help="average 10 crops (corners, centre, mirrored) taken from the image resized to --resize")
    parser.add_argument("--resize", type=int, help="short side before 10-crop (default: S x 256 / 224)")
    parser.add_argument("--gpus", default="", help="GPU ids, e.g. 0,1; empty = CPU")
    arrangement_policy.add_argument(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument("--data-nthreads", type=int, default=4, help="decode threads")
    parser.add_argument("--bad-records", default="stop", choices=data.BAD_RECORDS,
                        help="records whose image cannot be decoded: stop with their name, or skip them (scoring "
                             "then reads a copy of the .rec without them, written to a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table row")
    args = parser.parse_args(argv)
    if args.batch_size <= 0 or args.size <= 0:
        parser.error("--batch-size and --size must be positive")
    if args.num_classes is not None and args.num_classes <= 0:
        parser.error("--num-classes must be positive, got %d" % args.num_classes)
    try:
        args.contexts = devices.contexts(args.gpus)
        check_devices(args.contexts)
    except ValueError as err:
        parser.error(str(err))
    return args


def build(args, scratch):
    """(module bound for inference, spec, validation batches, crops per image, .rec read, skipped records, name
    of the arrangement)."""
    ckpt = checkpoint.load(args.prefix, args.epoch)
    spec = checkpoint.model_spec(ckpt, args.model, args.num_classes)
    ctx = args.contexts
    name = arrangement_policy.choose(args.arrangement, ctx)
    arrangement = symbols.ARRANGEMENTS[name].for_inference()
    symbol = symbols.score_symbol(spec.network, spec.num_classes, spec.classifier, args.size, args.meanmax,
                                  spec.train_size, arrangement=arrangement)
    rec, skipped = data.readable_rec(args.data_val, spec.num_classes, args.bad_records, scratch)
    for report in skipped:
        print("skipping %s" % report, file=sys.stderr)
    if args.ten_crop:
        crops = 10
        batches = data.ten_crop_iter(rec, args.batch_size, args.size, args.resize or args.size * 256 // 224)
    else:
        crops = 1
        batches = data.val_iter(rec, args.batch_size, args.size, threads=args.data_nthreads)
    module = inference_module(symbol, ctx, batches.provide_data, batches.provide_label, ckpt.arg_params,
                              ckpt.aux_params, arrangement)
    return module, spec, batches, crops, rec, skipped, name


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="score-") as scratch:
        try:
            module, spec, batches, crops, rec, skipped, arrangement = build(args, scratch)
        except ValueError as err:  # CheckpointError, DataError, UsageError, a size the graph cannot take
            sys.exit("error: %s" % err)
        with tqdm(total=data.num_records(rec), unit="img", file=sys.stderr, disable=None) as bar:
            try:
                scores = evaluate(module, batches, crops, progress=lambda done: bar.update(done - bar.n))
            except data.DataError as err:
                sys.exit("error: %s" % err)
    if skipped:
        print("skipped %d undecodable records of %s (--bad-records skip; each named above)"
              % (len(skipped), args.data_val), file=sys.stderr)
    row = {"model": spec.network if spec.network in symbols.VARIANTS else "custom", "size": args.size,
           "meanmax": args.meanmax, "ten_crop": args.ten_crop, "arrangement": arrangement,
           "top1_error": round(scores.top1_error, 3), "top5_error": round(scores.top5_error, 3), "images": scores.count,
           "images_per_second": round(scores.images_per_second, 2)}
    if args.json:
        print(json.dumps(row))
        return
    print("| model | size | mean-max | arrangement | top-1 err (%) | top-5 err (%) | images | img/s |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    print("| %s | %d | %s | %s | %.2f | %.2f | %d | %.1f |" % (
        row["model"], args.size, "yes" if args.meanmax else "no", arrangement, scores.top1_error,
        scores.top5_error, scores.count, scores.images_per_second))


if __name__ == "__main__":
    main()
