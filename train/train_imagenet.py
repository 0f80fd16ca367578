"""Train a DPN on ImageNet-style RecordIO files with MXNet's Module, on CPU, GPUs or many nodes (kvstore dist_sync).

    python train/train_imagenet.py --network dpn92 --data-train train.rec --data-val val.rec --gpus 0,1,2,3
    python tools/launch.py -n 10 -H hosts $PWD/.venv/bin/python train/train_imagenet.py --kv-store dist_sync ...
"""
import dataclasses
import functools
import logging
import os
import socket
import statistics
import sys
import tempfile
import traceback
import types

import symbols
from dpn_mxnet import arrangement_policy, benchmarking, checkpoint_policy, cli, environment, packing, recipe, run_lock
from dpn_mxnet.checks import (DataError, UsageError, check_devices, check_launched, check_output_folder,
                              check_positive, describe_error)
from dpn_mxnet.data import spec as augmentation
from dpn_mxnet.launcher.progress import Progress
from dpn_mxnet.launcher.supervisor import INPUT_ERROR_STATUS, announce_rank

if os.environ.get("DMLC_ROLE", "worker") != "worker":
    import mxnet  # noqa: F401  the servers and the scheduler of a dist job run inside MXNet's import

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
mx = cli.lazy_import("mxnet")
checkpoint, data, devices, fit_loop, identify, training_data = (cli.lazy_import("dpn_mxnet." + name) for name in (
    "checkpoint", "data", "devices", "fit", "identify", "data.training"))

# The paper's rate: 0.316 (sqrt 0.1) for a global batch of 1280, scaled linearly to the actual global batch.
REFERENCE_LR, REFERENCE_BATCH = 0.316, 1280


def build_parser():
    parser = cli.ArgumentParser(__doc__)
    model = parser.add_argument_group("model")
    model.add_argument("--network", default="dpn92",
                       help="one of %s, or a JSON DPN configuration" % ", ".join(symbols.VARIANTS))
    model.add_argument("--num-classes", type=int,
                       help="default: the class list beside --data-train (its classes.txt), else its largest "
                            "label + 1; 1000 with --benchmark")
    model.add_argument("--classifier", help="classifier layer name (default: the authors' name for this model)")
    model.add_argument("--size", type=int, default=224, help="training crop size")
    model.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                       help="float16 trains in half precision with multi-precision SGD")
    arrangement_policy.add_argument(model)

    io = parser.add_argument_group("data")
    io.add_argument("--data-train", help="training .rec (its .idx beside it)")
    io.add_argument("--data-val", help="validation .rec (its .idx beside it); empty = no validation")
    io.add_argument("--data-nthreads", type=int, default=4, help="decode threads per iterator")
    cli.add_bad_records(io)
    io.add_argument("--aug", default="stock", choices=cli.AUGMENTATIONS,
                    help="stock: MXNet's ImageRecordIter augmenters; fork: the crop geometry of the authors' fork "
                         "(see docs/augmentation.md)")
    augmentation.add_arguments(io)

    run = parser.add_argument_group("training")
    cli.add_gpus(run)
    run.add_argument("--kv-store", default=None,
                     choices=["local", "device", "dist_sync", "dist_device_sync", "dist_async"],
                     help="kvstore type (default: device with GPUs, local on CPU)")
    run.add_argument("--batch-size", type=int, help="batch per device (default: the authors' per-GPU batch, %s)"
                     % ", ".join("%s %d" % kv for kv in symbols.DEFAULT_BATCH.items()))
    run.add_argument("--num-epochs", type=int, default=100, help="epochs to train")
    run.add_argument("--lr", type=float, help="base learning rate (default: 0.316 x global batch / 1280)")
    run.add_argument("--lr-steps", default="30,60,90", help="epochs at which the rate is multiplied by --lr-factor")
    run.add_argument("--lr-factor", type=float, default=0.1, help="step decay factor")
    run.add_argument("--warmup-epochs", type=float, default=0, help="linear warm-up epochs")
    run.add_argument("--mom", type=float, default=0.9, help="SGD momentum")
    run.add_argument("--wd", type=float, default=1e-4, help="weight decay")
    run.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")

    out = parser.add_argument_group("checkpoints and logs")
    out.add_argument("--model-prefix", help="checkpoint prefix (default: checkpoints/<network>)")
    checkpoint_policy.add_arguments(out)
    out.add_argument("--resume", help="'auto' (last complete epoch under --model-prefix) or an epoch number: "
                                      "weights, BN statistics, optimizer state and the recipe of that epoch, and "
                                      "the data of the next one (default: none, a fresh start)")
    out.add_argument("--allow-recipe-change", action="store_true",
                     help="let flags of a resuming command change the checkpoint's recipe (each change is logged)")
    out.add_argument("--allow-momentum-reset", action="store_true",
                     help="let --resume start from an epoch whose .states is gone (e.g. deleted by the retention): "
                          "the momentum then starts from zero and the run differs from one that was not stopped")
    out.add_argument("--overwrite", action="store_true",
                     help="start a new run on a --model-prefix that holds another run's epochs, deleting them")
    out.add_argument("--recipe", help="start a new run from a saved recipe (a P-NNNN.recipe.json); flags given "
                                      "override it; a --resume that finds a checkpoint uses the checkpoint's")
    out.add_argument("--pretrained", help="initial weights: a .params file (ours or the authors'); tensors that "
                                          "do not fit, e.g. another classifier, are left to the initializer")
    out.add_argument("--disp-batches", type=int, default=20, help="log speed and metrics every N batches")
    out.add_argument("--log-file", help="also log to this file (rank 0; default: <model-prefix>-train.log)")
    out.add_argument("--benchmark", action="store_true", help="synthetic data: print img/s per node and exit")
    out.add_argument("--benchmark-batches", type=int, default=10, help="steps timed by --benchmark (median)")
    return parser


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A training run's configuration, built once by ``parse_args`` and read-only after. Each option is an
    attribute (``config.wd``): the command's value, else its recipe's, with the defaults that depend on other
    options filled in (--model-prefix, --num-classes, --batch-size, --kv-store, --arrangement); --lr stays None
    when the rate follows the global batch, known once the job has started (``learning_rate``)."""
    options: types.MappingProxyType
    name: str               # the variant's name, or dpn-custom for a JSON configuration
    config: object          # the network (symbols.DPNConfig)
    classes: object         # the class list of the training set, or None
    contexts: tuple         # the MXNet contexts of --gpus
    begin_epoch: int        # the epoch resumed, 0 for a fresh start
    base_recipe: object     # the recipe resumed or started from (--recipe), or None
    notes: tuple            # what --resume passed over and what the recipe changed, logged once the log is open
    created_folders: tuple  # the output folders this command made, deepest first (a failed start removes them)

    def __getattr__(self, name):
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError("%s has no %r" % (type(self).__name__, name))

    def recipe_flags(self):
        """{destination: value} of the options that decide the result (``RECIPE_FLAGS``), the data as given."""
        return {name: self.options[name] for name in RECIPE_FLAGS}


def parse_args(argv=None):
    """The run's configuration (a RunConfig), in named steps: parse, recipe, validate, resolve, output folders. A
    usage error ends the process with one line (status 2; 1 for an output folder it cannot write), and so does a
    run that has nothing to do (status 0)."""
    parser = build_parser()
    options, given = parse(parser, argv)
    try:
        begin_epoch, resume_notes = (0, ()) if options["benchmark"] else resume_epoch(options)
        options, base_recipe, recipe_notes = apply_recipe(options, given, begin_epoch)
    except (UsageError, recipe.RecipeError, checkpoint.CheckpointError, run_lock.PrefixInUse) as err:
        parser.error(str(err))
    if options["resume"] and begin_epoch >= options["num_epochs"]:
        parser.exit(0, "%s: nothing to do: %s-%04d is saved and --num-epochs is %d (give a larger --num-epochs to "
                       "train on)\n" % (parser.prog, options["model_prefix"], begin_epoch, options["num_epochs"]))
    validate(parser, options)
    options, resolved = resolve(parser, options)
    return RunConfig(options=types.MappingProxyType(options), begin_epoch=begin_epoch, base_recipe=base_recipe,
                     notes=tuple(resume_notes) + tuple(recipe_notes),
                     created_folders=tuple(output_folders(parser, options)), **resolved)


def parse(parser, argv):
    """The command line: {destination: value} (--lr-steps a list of epochs, --model-prefix defaulted from the
    network as given) and the destinations of the options it gave."""
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else [str(word) for word in argv]
    given = {action.dest for action in parser._actions
             if any(word.split("=", 1)[0] in action.option_strings for word in argv)}
    try:
        lr_steps = [float(s) for s in args.lr_steps.split(",") if s.strip()]
    except ValueError:
        parser.error("--lr-steps: expected comma-separated epochs, got %r" % args.lr_steps)
    model_prefix = args.model_prefix or os.path.join("checkpoints", variant_name(args.network))
    return dict(vars(args), lr_steps=lr_steps, model_prefix=model_prefix), given


def variant_name(network):
    """The name of the --network ``network``: a variant's, or dpn-custom for a JSON configuration."""
    return network if network in symbols.VARIANTS else "dpn-custom"


def validate(parser, options):
    """Usage errors in the values of the options, before anything is read or probed for them."""
    if any(options[name] is not None and options[name] <= 0 for name in ("batch_size", "num_epochs", "save_period")):
        parser.error("--batch-size, --num-epochs and --save-period must be positive")
    try:
        checkpoint_policy.check(options)
        if not options["benchmark"] and not options["data_train"]:
            raise UsageError("--data-train is required (or --benchmark for synthetic data)")
        check_positive("--lr", options["lr"], zero=True)  # 0 freezes the weights (BN statistics still move)
    except UsageError as err:
        parser.error(str(err))


def resolve(parser, options):
    """The defaults that depend on other options, the training set or the machine, each checked: returns the
    options with them filled in, and the RunConfig's other fields (name, network, classes, contexts)."""
    try:
        num_classes, classes = take_classes(options)
    except UsageError as err:
        parser.error(str(err))
    except DataError as err:
        parser.exit(INPUT_ERROR_STATUS, "error: %s\n" % err)
    try:
        config = symbols.resolve(options["network"])
        symbols.check_num_classes(num_classes)
        symbols.check_image_size(config, options["size"])
    except ValueError as err:
        parser.error("--network/--num-classes/--size: %s" % err)
    batch_size = options["batch_size"] or symbols.DEFAULT_BATCH.get(options["network"], 32)
    kv_store = options["kv_store"] or ("device" if options["gpus"] else "local")
    try:
        contexts = devices.contexts(options["gpus"])
        check_devices(contexts, options["dtype"])
        arrangement = arrangement_policy.choose(options["arrangement"], contexts, options["dtype"])
        check_launched(kv_store)
    except ValueError as err:
        parser.error(str(err))
    resolved = dict(options, num_classes=num_classes, batch_size=batch_size, kv_store=kv_store,
                    arrangement=arrangement)
    return resolved, {"name": variant_name(options["network"]), "config": config, "classes": classes,
                      "contexts": tuple(contexts)}


def output_folders(parser, options):
    """Create the folders of --model-prefix and --log-file, checked writable; returns those it made, deepest
    first (none with --benchmark, which writes nothing)."""
    created = []
    if options["benchmark"]:
        return created
    try:
        for path in (options["model_prefix"], options["log_file"]):
            created += missing_folders(os.path.dirname(os.path.abspath(path))) if path else []
        check_output_folder(os.path.dirname(os.path.abspath(options["model_prefix"])), "--model-prefix", create=True)
        if options["log_file"]:
            check_output_folder(os.path.dirname(os.path.abspath(options["log_file"])), "--log-file", create=True)
    except UsageError as err:
        parser.exit(1, "error: %s\n" % err)
    return created


def missing_folders(path):
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


# The options of these groups decide a run's result, but for those named here; they make its recipe, saved with
# every checkpoint and restored on --resume.
RECIPE_GROUPS = ("model", "data", "training")
NOT_IN_RECIPE = {"data_nthreads": "decode threads: speed only", "gpus": "the recipe has the number of devices",
                 "num_epochs": "how far the run goes, not what it computes"}
RESULT_OPTIONS = ("pretrained",)  # deciding options of the other groups


def recipe_flags(parser):
    """The destinations of the options that decide a run's result, read from ``parser``'s groups."""
    flags = [action.dest for group in parser._action_groups if group.title in RECIPE_GROUPS
             for action in group._group_actions if action.dest not in NOT_IN_RECIPE]
    return tuple(flags) + RESULT_OPTIONS


RECIPE_FLAGS = recipe_flags(build_parser())


def apply_recipe(options, given, begin_epoch):
    """The recipe step: the recipe flags the command did not give, filled from the resumed checkpoint's recipe,
    else from --recipe; a given flag that contradicts the checkpoint's recipe raises RecipeError (unless
    --allow-recipe-change). Returns the options, the recipe (or None) and lines to log."""
    notes = []
    if begin_epoch:
        source = "%s-%04d" % (options["model_prefix"], begin_epoch)
        base_recipe = checkpoint.load_recipe(options["model_prefix"], begin_epoch)
        if base_recipe is None:
            notes.append("%s has no recipe (written before recipes): the command's flags apply" % source)
    elif options["recipe"]:
        source, base_recipe = options["recipe"], recipe.load(options["recipe"])
    else:
        base_recipe = None
    if base_recipe is None:
        return options, None, notes
    values = {name: options[name] for name in RECIPE_FLAGS}
    merged, changes = recipe.merge(values, given, base_recipe["flags"], source,
                                   options["allow_recipe_change"] or not begin_epoch)
    notes += ["recipe of %s, changed: %s" % (source, change) for change in changes]
    return dict(options, **merged), base_recipe, notes


def take_classes(options):
    """(--num-classes, the class table or None): when not given, from the training .rec's class list or labels
    (``packing.rec_classes``); a given one that contradicts them is a UsageError naming both numbers."""
    if options["benchmark"] or not options["data_train"]:
        return options["num_classes"] or 1000, None
    table, count, source = packing.rec_classes(options["data_train"])
    num_classes = options["num_classes"]
    if num_classes is not None and num_classes != count and (table is not None or num_classes < count):
        raise UsageError("--num-classes %d contradicts %s (%d classes)" % (num_classes, source, count))
    return count if num_classes is None else num_classes, table


def resume_epoch(options):
    """The epoch to start from: 0, a given epoch, or the newest one under the prefix whose set is whole (--resume
    auto), and a line for each newer one it passes over. Refuses a prefix that another run holds, a new run on a
    prefix that holds epochs (unless --overwrite) and an epoch without its optimizer state (unless
    --allow-momentum-reset)."""
    prefix, resume = options["model_prefix"], options["resume"]
    run_lock.check_free(prefix)
    saved = checkpoint.available_epochs(prefix)
    if options["overwrite"] and resume:
        raise UsageError("--overwrite starts a new run: it does not go with --resume")
    if not resume:
        if saved and not options["overwrite"]:
            raise UsageError("--model-prefix %s already holds epochs %s of a run (newest %s): give --resume auto to "
                             "continue it, or another --model-prefix to start a new run (--overwrite deletes it)"
                             % (prefix, _epoch_list(saved), checkpoint.params_path(prefix, saved[-1])))
        return 0, []
    if resume == "auto":
        candidates = saved[::-1]
    else:
        try:
            candidates = [int(resume)]
        except ValueError:
            raise UsageError("--resume: expected 'auto' or an epoch number, got %r" % resume) from None
        if candidates[0] not in saved and os.path.exists(checkpoint.params_path(prefix, candidates[0])):
            raise UsageError("--resume %d: the save of %s-%04d did not finish (it is not committed in %s)"
                             % (candidates[0], prefix, candidates[0], checkpoint.metrics_path(prefix)))
        if candidates[0] not in saved:
            raise checkpoint.missing_epoch(prefix, candidates[0])
    notes = []
    for epoch in candidates:
        problem = checkpoint.resume_problem(prefix, epoch)
        if problem is None or options["allow_momentum_reset"]:
            return epoch, notes
        if resume != "auto" or epoch == candidates[-1]:
            raise UsageError("--resume %s: cannot continue epoch %d with its momentum: %s; give "
                             "--allow-momentum-reset to resume it with momentum zero" % (resume, epoch, problem))
        notes.append("--resume auto: skipping epoch %d: %s" % (epoch, problem))
    return 0, notes


def _epoch_list(epochs):
    return "%d-%d" % (epochs[0], epochs[-1]) if len(epochs) > 2 else ", ".join(map(str, epochs))


def initial_params(args, symbol, data_shape, begin_epoch, logger):
    """(arg_params, aux_params) to start from: a resumed epoch, released weights, or None (initializer)."""
    if begin_epoch:
        saved = checkpoint.load(args.model_prefix, begin_epoch)
        identify.check_fits(symbol, saved.arg_params, saved.aux_params, data_shape,
                            "%s with %d classes" % (args.name, args.num_classes))
        logger.info("resuming from %s", checkpoint.params_path(args.model_prefix, begin_epoch))
        return saved.arg_params, saved.aux_params
    if args.pretrained:
        classifier = args.classifier or symbols.default_classifier(args.config, args.num_classes)
        weights = identify.pretrained_subset(args.pretrained, symbol, classifier, data_shape, args.name)
        logger.info("initial weights from %s: %s", args.pretrained, weights.summary)
        return weights.arg_params, weights.aux_params
    return None, None


def setup_logging(args, rank):
    fmt = "%(asctime)s " + ("rank %d " % rank) + "%(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stdout)
    logger = logging.getLogger("train")
    if rank == 0 and not args.benchmark:
        path = args.log_file or args.model_prefix + "-train.log"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handler = logging.FileHandler(path, delay=True)  # created by the first line: a failed start leaves none
        handler.setFormatter(logging.Formatter(fmt))
        logging.getLogger().addHandler(handler)
    return logger


def readable_data(args, kv, scratch, logger):
    """The .rec files to read ({"data_train": path, "data_val": path}), checked (labels, record heads, image
    signatures) and, with --bad-records skip, copies without the undecodable records; and the reports of the
    skipped records."""
    recs, skipped = {"data_train": args.data_train, "data_val": args.data_val}, []
    # every record head of the training set: once per job is enough, unless every worker must leave out the same
    # records; the validation set: only rank 0 validates
    check_train = args.data_train and not args.benchmark and (kv.rank == 0 or args.bad_records == "skip")
    check_val = bool(args.data_val) and not args.benchmark and kv.rank == 0
    for flag, check in (("data_val", check_val), ("data_train", check_train)):
        if check:
            rec, reports = data.readable_rec(recs[flag], args.num_classes, args.bad_records,
                                             tempfile.mkdtemp(dir=scratch))
            for report in reports:
                logger.warning("skipping %s", report)
            recs[flag] = rec
            skipped += reports
    return recs, skipped


def training_batches(args, kv, ctx, data_shape, rec):
    """The training iterator of ``rec`` (sharded over workers, equal batch count on each, every epoch a function of
    the seed, the rank and the epoch) and its batches per epoch."""
    global_batch = args.batch_size * len(ctx)
    if args.benchmark:
        synthetic = mx.io.NDArrayIter(mx.nd.random.uniform(-2, 2, (global_batch,) + data_shape[1:]),
                                      mx.nd.zeros(global_batch), global_batch, label_name="softmax_label")
        return synthetic, 1
    per_epoch = training_data.batches_per_epoch(data.num_records(rec), kv.num_workers, global_batch)
    batches = training_data.train_iter(rec, global_batch, args.size, num_parts=kv.num_workers, part_index=kv.rank,
                                       batches_per_epoch=per_epoch, threads=args.data_nthreads, seed=args.seed,
                                       aug=args.aug, **augmentation.from_options(args))
    return batches, per_epoch


def main(argv=None):
    """Train; any error ends this process at once with one line (see ``end_on_error``)."""
    args = parse_args(argv)
    process = {}
    try:
        with tempfile.TemporaryDirectory(prefix="train-") as scratch:
            train(args, scratch, process)
    except BaseException as error:
        if "lock" in process:
            process["lock"].release()
        for folder in args.created_folders:  # a failed start leaves nothing behind
            try:
                os.rmdir(folder)
            except OSError:
                break
        end_on_error(error, process.get("name"))
    if "lock" in process:
        process["lock"].release()


def end_on_error(error, name=None):
    """Print one line naming this process (``name``, e.g. its kvstore rank) and the cause, then exit at once: 1, or
    INPUT_ERROR_STATUS for errors a restart would meet again (data, usage, another run on the prefix).

    ``os._exit`` skips the destructor of a dist kvstore, which waits in a barrier for every other process of the
    job: they are waiting for this one, so a normal exit would hang the job; the launcher stops the others.
    Unexpected error types (bugs) print their traceback first.
    """
    if isinstance(error, SystemExit) and error.code in (None, 0):
        status, cause = 0, None
    elif isinstance(error, SystemExit):
        status, cause = error.code if isinstance(error.code, int) else 1, error.code
        cause = None if isinstance(cause, int) else str(cause)
    elif isinstance(error, KeyboardInterrupt):
        status, cause = 130, "interrupted"
    else:
        recurring = (DataError, UsageError, recipe.RecipeError, run_lock.PrefixInUse)
        if not isinstance(error, (checkpoint.CheckpointError, OSError, mx.base.MXNetError) + recurring):
            traceback.print_exception(error)
        status, cause = INPUT_ERROR_STATUS if isinstance(error, recurring) else 1, describe_error(error)
    if cause:
        cause = cause[len("error: "):] if cause.startswith("error: ") else cause
        print("error: %s%s" % ("%s: " % name if name else "", cause), file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# Module.init_optimizer reads it: 0 keeps the optimizer on the workers, where its states can be saved
OPTIMIZER_ENVIRONMENT = {"MXNET_UPDATE_ON_KVSTORE": "0"}


@dataclasses.dataclass(frozen=True)
class Training:
    """What the epochs of a run need, made by ``set_up``."""
    module: object
    train_batches: object
    val_batches: object     # None where this worker does not validate
    save: object            # save(epochs_done, summary): the checkpoint policy, for this module and recipe
    policy: object          # the CheckpointPolicy
    lr_of: object           # lr_of(epochs_done): the learning rate, for the epoch summaries
    skipped: list           # reports of the records left out (--bad-records skip)


def train(args, scratch, process):
    """The training run: set up, then fit. ``process["name"]`` is set to this worker's kvstore rank and host once
    known, ``process["lock"]`` to the prefix's lock once held."""
    kv, logger = join_job(args, process)
    run = set_up(args, kv, scratch, logger)
    if args.benchmark:
        benchmark(args, args.contexts, run.module, next(iter(run.train_batches)))
        return
    run.policy.begin(model_info(args), args.begin_epoch)
    progress = Progress(enabled="dist" in args.kv_store)
    fit_loop.fit(run.module, run.train_batches, run.val_batches, args.begin_epoch, args.num_epochs, run.save,
                 args.disp_batches, lr_of=run.lr_of, logger=logger, progress=progress)
    if run.skipped:
        logger.warning("skipped %d undecodable records (--bad-records skip; each named above)", len(run.skipped))
    progress.done()


def join_job(args, process):
    """This worker's kvstore and logger: its rank announced (dist), the prefix locked (rank 0), the log opened and
    the configuration's notes logged."""
    kv = mx.kv.create(args.kv_store)
    if "dist" in args.kv_store:
        announce_rank(kv)
        process["name"] = "worker rank %d of %d on %s" % (kv.rank, kv.num_workers,
                                                          os.environ.get("DMLC_NODE_HOST") or socket.gethostname())
    if kv.rank == 0 and not args.benchmark:
        process["lock"] = run_lock.RunLock(args.model_prefix)
    logger = setup_logging(args, kv.rank)
    for note in args.notes:
        logger.info("%s", note)
    return kv, logger


def set_up(args, kv, scratch, logger):
    """The graph, the prefix cleaned up, the data, the starting weights, the learning rate and recipe, and the
    module bound with its optimizer."""
    ctx = args.contexts
    mx.random.seed(args.seed)  # every worker initialises identically
    data_shape = (args.batch_size * len(ctx), 3, args.size, args.size)
    arrangement = symbols.ARRANGEMENTS[args.arrangement]
    symbol = symbols.get_symbol(args.config, args.num_classes, args.classifier, args.size, args.dtype,
                                arrangement=arrangement)
    exact = symbols.get_symbol(args.config, args.num_classes, args.classifier, args.size)
    policy = checkpoint_policy.CheckpointPolicy.from_options(args.options, writes=kv.rank == 0, logger=logger)
    if not args.benchmark:
        policy.clean_up(args.overwrite)
    recs, skipped = readable_data(args, kv, scratch, logger)
    train_batches, per_epoch = training_batches(args, kv, ctx, data_shape, recs["data_train"])
    val_batches = (data.val_iter(recs["data_val"], data_shape[0], args.size, threads=args.data_nthreads)
                   if args.data_val and kv.rank == 0 and not args.benchmark else None)
    arg_params, aux_params = initial_params(args, exact, data_shape, args.begin_epoch, logger)

    base_lr, run_recipe = learning_rate(args, kv, len(ctx), logger)
    schedule = fit_loop.learning_rate_schedule(base_lr, per_epoch, args.lr_steps, args.lr_factor, args.warmup_epochs)
    logger.info("%s: %d classes, %dx%d, batch %d per device x %d devices x %d workers, lr %.5g, %d batches/epoch, "
                "%s arrangement", args.name, args.num_classes, args.size, args.size, args.batch_size,
                len(ctx), kv.num_workers, base_lr, per_epoch, args.arrangement)
    module = bound_module(args, kv, symbol, arrangement, train_batches, (arg_params, aux_params),
                          optimizer_settings(args, base_lr, per_epoch, schedule), logger)
    return Training(module, train_batches, val_batches, functools.partial(policy.save, module, exact, run_recipe),
                    policy, (lambda epochs: schedule(epochs * per_epoch)) if schedule else (lambda epochs: base_lr),
                    skipped)


def optimizer_settings(args, base_lr, per_epoch, schedule):
    """SGD's parameters: the rate, momentum and weight decay, the update count of a resumed run, the schedule."""
    optimizer_params = {"learning_rate": base_lr, "momentum": args.mom, "wd": args.wd,
                        "begin_num_update": args.begin_epoch * per_epoch, "multi_precision": args.dtype == "float16"}
    if schedule is not None:
        optimizer_params["lr_scheduler"] = schedule
    return optimizer_params


def bound_module(args, kv, symbol, arrangement, train_batches, params, optimizer_params, logger):
    """The Module of ``symbol``: bound, initialised from ``params`` (arg, aux; the initializer for what they lack)
    and with its SGD optimizer, whose state comes from the resumed epoch's .states where it is kept."""
    ctx = list(args.contexts)
    module = mx.mod.Module(symbol, context=ctx, logger=logger)
    with arrangement_policy.bind_settings(arrangement):
        module.bind(data_shapes=train_batches.provide_data, label_shapes=train_batches.provide_label)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                       arg_params=params[0], aux_params=params[1], allow_missing=True)
    with environment.defaults(OPTIMIZER_ENVIRONMENT):
        module.init_optimizer(kvstore=kv if "dist" in args.kv_store or len(ctx) > 1 else None, optimizer="sgd",
                              optimizer_params=optimizer_params)
    if args.begin_epoch:
        states = checkpoint.states_path(args.model_prefix, args.begin_epoch)
        if os.path.isfile(states):
            module.load_optimizer_states(states)
        else:
            logger.warning("%s not found (not kept by the retention): the momentum starts from zero", states)
    return module


def model_info(args):
    """What the prefix's P-model.json says of the network (``checkpoint.save_model_info``)."""
    return {"network": args.network if args.network in symbols.VARIANTS else args.config.to_json(),
            "num_classes": args.num_classes,
            "classifier": args.classifier or symbols.default_classifier(args.config, args.num_classes),
            "image_size": args.size, **({"classes": args.classes} if args.classes else {})}


def learning_rate(args, kv, device_count, logger):
    """The base learning rate and the run's recipe: --lr (or the recipe's), else 0.316 per 1280 images of the
    global batch; for a resumed run whose world changed, as ``check_world`` says."""
    global_batch = args.batch_size * device_count * (kv.num_workers if "dist" in args.kv_store else 1)
    lr = args.lr if args.lr is not None else REFERENCE_LR * global_batch / REFERENCE_BATCH
    lr = check_world(args, {"world_size": kv.num_workers, "devices": device_count}, lr, logger)
    return lr, recipe.make(dict(args.recipe_flags(), lr=lr), kv.num_workers, device_count)


def check_world(args, world, lr, logger):
    """The resumed checkpoint's world size and devices per worker against this run's ``world`` (a change alters
    the global batch and the data shards): a UsageError, or with --allow-recipe-change one line with the new global
    batch and learning rate. Returns the learning rate: ``lr``, or, when it is the recipe's (the command does not
    change it), ``lr`` scaled linearly with the global batch."""
    if not args.begin_epoch or args.base_recipe is None:
        return lr
    changes = []
    for key in ("world_size", "devices"):
        old, new = args.base_recipe.get(key), world[key]
        if old is not None and old != new:
            if not args.allow_recipe_change:
                raise UsageError("%s %d differs from the recipe of %s-%04d (%s %d); give "
                                 "--allow-recipe-change to change it"
                                 % (key, new, args.model_prefix, args.begin_epoch, key, old))
            changes.append("%s: %d -> %d" % (key, old, new))
    if not changes:
        return lr
    old_batch, new_batch = (args.batch_size * each["world_size"] * each["devices"]
                            for each in (dict(world, **args.base_recipe), world))
    new_lr = lr
    if lr == args.base_recipe["flags"].get("lr"):
        new_lr = float("%.6g" % (lr * new_batch / old_batch))
    logger.info("recipe of %s-%04d, changed: %s: global batch %d -> %d, learning rate %.5g -> %.5g%s",
                args.model_prefix, args.begin_epoch, ", ".join(changes), old_batch, new_batch, lr, new_lr,
                " (linear rule)" if new_lr != lr else " (as given)")
    return new_lr


def benchmark(args, ctx, module, batch):
    """Time training steps on one synthetic batch; print a row in the columns of the authors' speed table."""
    images_per_second = batch.data[0].shape[0] / statistics.median(benchmarking.step_times(
        lambda: fit_loop.train_step(module, batch, wait=True), warmup=2, repeats=args.benchmark_batches))
    print("| model | batch/device | devices | kvstore | memory (MiB) | img/s |")
    print("|---|---:|---:|---|---:|---:|")
    print("| %s | %d | %d %s | %s | %.0f | %.2f |" % (args.name, args.batch_size, len(ctx), ctx[0].device_type,
                                                   args.kv_store, devices.peak_memory_mb(ctx), images_per_second))


if __name__ == "__main__":
    main()
