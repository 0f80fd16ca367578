"""The argument parser of every entry point: no abbreviated flags, and usage errors in one line."""
import argparse


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``allow_abbrev=False`` (``--model`` is not taken for ``--model-prefix``)
    whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, with exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))

