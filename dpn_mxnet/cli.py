"""The command-line vocabulary of every entry point: one parser class and the option groups they share, each
option with one name, one default and one meaning. Imports no framework (the timm benchmark uses it too)."""
import argparse

VARIANT_NAMES = "dpn68, dpn68b, dpn92, dpn98, dpn107, dpn131"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default once: appended to its help unless the
    help already speaks of its default, or the option has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
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
