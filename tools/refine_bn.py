"""Re-estimate every BatchNorm's moving mean and variance with the weights frozen (the paper's BN refinement).

    python tools/refine_bn.py --model-prefix checkpoints/dpn92 --load-epoch 100 --data-train train.rec --batches 200

Each batch runs forward in training mode (every BatchNorm normalising with its batch statistics, as during
training; no optimizer, so the weights stay as they are) and the per-channel mean and variance of every
BatchNorm's input are averaged over the batches ("precise BN"); those become the moving statistics. Images
are read with the validation protocol (short side, centre crop). The result is a new checkpoint with the same
weights, by default ``<prefix>-bnrefined`` at the same epoch.
"""
import json
import os
import sys
import tempfile

from dpn_mxnet import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    cli.add_model(parser, num_classes=False, arrangement=False, epoch_default=None)
    parser.add_argument("--data-train", required=True, help="training .rec whose images estimate the statistics")
    parser.add_argument("--batches", type=int, default=200, help="batches to average over")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument("--data-nthreads", type=int, default=4, help="decode threads")
    parser.add_argument("--out-prefix", help="where to save (default: <prefix>-bnrefined)")
    cli.add_bad_records(parser)
    args = parser.parse_args(argv)
    cli.check_positive(parser, args, "batches", "batch_size", "size")
    args.contexts = cli.contexts(parser, args)
    if len(args.contexts) != 1:
        parser.error("--gpus: BatchNorm statistics are averaged over whole batches on one device, got %r" % args.gpus)
    return args


def batchnorm_inputs(symbol):
    """({BatchNorm name: name of its input}, {input name: symbol}); BatchNorms may share an input."""
    nodes = json.loads(symbol.tojson())["nodes"]
    internals = symbol.get_internals()
    source_of, sources = {}, {}
    for node in nodes:
        if node["op"] == "BatchNorm":
            source = nodes[node["inputs"][0][0]]
            name = source["name"] if source["op"] == "null" else source["name"] + "_output"
            source_of[node["name"]] = name
            sources.setdefault(name, internals[name])
    return source_of, sources


def refine(symbol, arg_params, batches, num_batches, context):
    """Average each BatchNorm's per-channel batch mean and (biased) variance of its input over ``num_batches``
    batches, with every BatchNorm in training mode as during training; returns the new aux params."""
    import mxnet as mx
    import numpy as np

    from dpn_mxnet import data
    source_of, sources = batchnorm_inputs(symbol)
    shape = batches.provide_data[0][1]
    # oneDNN's inference fusion pass cannot bind a graph whose outputs are inner tensors; it fuses nothing here
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    executor = mx.sym.Group(list(sources.values())).simple_bind(context, grad_req="null", data=shape)
    executor.copy_params_from(arg_params, allow_extra_params=True)
    means = {name: 0.0 for name in sources}
    variances = {name: 0.0 for name in sources}
    done = 0
    batches.reset()
    for batch in batches:
        if done == num_batches:
            break
        for name, value in zip(sources, executor.forward(is_train=True, data=batch.data[0])):
            value = value.asnumpy().astype(np.float64)
            means[name] = means[name] + value.mean(axis=(0, 2, 3))
            variances[name] = variances[name] + value.var(axis=(0, 2, 3))
        done += 1
    if not done:
        raise data.DataError("no batches to estimate BatchNorm statistics from")
    aux_params = {}
    for batchnorm, source in source_of.items():
        aux_params[batchnorm + "_moving_mean"] = mx.nd.array(means[source] / done)
        aux_params[batchnorm + "_moving_var"] = mx.nd.array(variances[source] / done)
    return aux_params, done


def main(argv=None):
    args = parse_args(argv)
    import symbols
    from dpn_mxnet import checkpoint, data
    from dpn_mxnet.checks import check_output_folder
    from dpn_mxnet.inference import load_model
    out_prefix = args.out_prefix or args.model_prefix + "-bnrefined"
    try:
        check_output_folder(os.path.dirname(os.path.abspath(out_prefix)), "--out-prefix")
        with tempfile.TemporaryDirectory(prefix="refine-") as scratch:
            model = load_model(args.model_prefix, args.load_epoch, args.network, size=args.size)
            ckpt, spec, size = model.checkpoint, model.spec, model.size
            rec, skipped = data.readable_rec(args.data_train, spec.num_classes, args.bad_records, scratch)
            for report in skipped:
                print("skipping %s" % report, file=sys.stderr)
            batches = data.val_iter(rec, args.batch_size, size, threads=args.data_nthreads)
            symbol = symbols.get_symbol(spec.network, spec.num_classes, spec.classifier, size)
            aux_params, used = refine(symbol, ckpt.arg_params, batches, args.batches, args.contexts[0])
        checkpoint.save(out_prefix, args.load_epoch, symbol, ckpt.arg_params, aux_params)
        if ckpt.info:
            checkpoint.save_model_info(out_prefix, ckpt.info)
    except ValueError as err:  # CheckpointError, DataError, UsageError
        sys.exit("error: %s" % err)
    if skipped:
        print("skipped %d undecodable records of %s (--bad-records skip; each named above)"
              % (len(skipped), args.data_train), file=sys.stderr)
    print(json.dumps({"saved": checkpoint.params_path(out_prefix, args.load_epoch), "batches": used,
                      "images": used * args.batch_size, "batchnorms": len(aux_params) // 2}))


if __name__ == "__main__":
    main()
