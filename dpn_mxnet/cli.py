"""The command-line vocabulary of every entry point: one parser class and the option groups they share, each
option with one name, one default and one meaning. Imports no framework (the timm benchmark uses it too), so that
an entry point's --help comes without loading MXNet."""
import argparse
import importlib.util
import sys

import symbols

VARIANT_NAMES = ", ".join(symbols.VARIANTS)
BAD_RECORDS = ("stop", "skip")     # --bad-records: stop at an undecodable image, or skip it
AUGMENTATIONS = ("stock", "fork")  # --aug (docs/augmentation.md)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default once: appended to its help unless the
    help already speaks of its default, or the option has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is value for value in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``allow_abbrev=False`` (``--model`` is not taken for ``--model-prefix``)
    whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, with exit status 2. Given
    ``doc`` (an entry point's docstring), its first paragraph is the description and the rest the epilog."""

    def __init__(self, doc=None, **kwargs):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", HelpFormatter)
        if doc is not None:
            summary, _, rest = doc.strip().partition("\n\n")
            kwargs.setdefault("description", summary)
            kwargs.setdefault("epilog", rest or None)
        super().__init__(**kwargs)

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def lazy_import(name):
    """The module ``name``, its code run on first attribute access (``importlib.util.LazyLoader``): for entry points
    whose functions share framework modules that parsing the command line does not need."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def add_checkpoint(parser, epoch_default=0):
    """--model-prefix and --load-epoch: the checkpoint an entry point reads."""
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--model-prefix", required=True, metavar="PREFIX",
                       help="checkpoint prefix: PREFIX-NNNN.params (ours or the authors'), e.g. models/dpn92")
    group.add_argument("--load-epoch", type=int, default=epoch_default, required=epoch_default is None,
                       metavar="N", help="epoch of the checkpoint to read (the authors' releases are epoch 0)")
    return group


def add_network(parser, num_classes=True):
    """--network (and --num-classes) for entry points that read a checkpoint: both default to what the checkpoint
    says (our PREFIX-model.json, else the variant whose tensors it matches)."""
    group = parser.add_argument_group("network")
    group.add_argument("--network", help="%s, or a JSON DPN configuration (default: read from the checkpoint)"
                                         % VARIANT_NAMES)
    if num_classes:
        group.add_argument("--num-classes", type=int, help="classes (default: read from the checkpoint)")
    return group


def add_gpus(parser):
    """--gpus: the devices an entry point computes on."""
    parser.add_argument("--gpus", default="", metavar="IDS",
                        help="GPU ids such as 0,1,2,3 (default: none, the CPU)")


def add_model(parser, num_classes=True, gpus=True, arrangement=True, epoch_default=0):
    """What ``inference.load_model`` reads: the checkpoint, the network, --size and (for entry points that bind a
    graph) --gpus and --arrangement."""
    from dpn_mxnet import arrangement_policy
    add_checkpoint(parser, epoch_default)
    group = add_network(parser, num_classes)
    group.add_argument("--size", type=int, help="input size S (default: the checkpoint's training size)")
    if gpus:
        add_gpus(group)
    if arrangement:
        arrangement_policy.add_argument(group)
    return group


def add_bad_records(parser, what="records"):
    """--bad-records: what an entry point does with images it cannot decode."""
    parser.add_argument("--bad-records", default="stop", choices=BAD_RECORDS,
                        help="%s whose image cannot be decoded: stop with their name, or skip them%s"
                             % (what, " (read from a copy of the .rec without them, written to a temporary folder)"
                                if what == "records" else ""))


def check_positive(parser, args, *names):
    """A usage error for the first of the options ``names`` (destinations) given as 0 or less."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error("--%s must be positive, got %s" % (name.replace("_", "-"), value))


def contexts(parser, args):
    """The MXNet contexts of --gpus (checked: a CUDA build that sees those GPUs), or a usage error."""
    from dpn_mxnet import checks, devices
    try:
        found = devices.contexts(args.gpus)
        checks.check_devices(found)
    except ValueError as err:
        parser.error(str(err))
    return found
