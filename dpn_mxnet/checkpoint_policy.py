"""When a training run writes its checkpoints and which of them it keeps: its flags (--save-period, --keep-last,
--keep-every), the retention rule, and ``CheckpointPolicy``, which does the writing (``dpn_mxnet.checkpoint``
stores each set)."""
import logging
import os

from . import cli
from .checks import UsageError

# MXNet loads on first use: the training entry point adds these flags before it parses its command line
checkpoint, fit = (cli.lazy_import("dpn_mxnet." + name) for name in ("checkpoint", "fit"))


def add_arguments(group):
    """The flags of the policy, in ``group`` (an argument group of the training entry point)."""
    group.add_argument("--save-period", type=int, default=1, help="save every N epochs (and after the last)")
    group.add_argument("--keep-last", type=int, default=3,
                       help="keep .params, .states and recipe of the last K saved epochs (0: of every epoch)")
    group.add_argument("--keep-every", type=int, default=10,
                       help="of the older epochs, keep the .params and recipe of every M-th epoch (0: none)")


def check(options):
    """A UsageError for retention flags out of range in ``options`` ({destination: value}; --save-period is
    checked with the other counts)."""
    if options["keep_last"] < 0 or options["keep_every"] < 0:
        raise UsageError("--keep-last and --keep-every must be 0 or more")


def apply_retention(prefix, keep_last, keep_every):
    """Delete what the retention keeps no longer: the last ``keep_last`` saved epochs keep .params, .states and
    recipe (0: every epoch keeps them); of the older ones, every ``keep_every``-th epoch keeps its .params and
    recipe (0: none). The .params goes first, so a cut-short deletion never leaves an epoch that looks complete
    without its states. Returns the paths deleted."""
    epochs = checkpoint.available_epochs(prefix)
    older = epochs[:-keep_last] if keep_last else []
    deleted = []
    for epoch in older:
        kept_params = keep_every and epoch % keep_every == 0
        paths = [checkpoint.states_path(prefix, epoch)] if kept_params else [
            checkpoint.params_path(prefix, epoch), checkpoint.states_path(prefix, epoch),
            checkpoint.recipe_path(prefix, epoch)]
        for path in paths:
            if os.path.exists(path):
                os.remove(path)
                deleted.append(path)
    return deleted


class CheckpointPolicy:
    """The checkpoints of one training run under ``prefix``: after every ``save_period``-th epoch and the last
    (``last_epoch``) a whole set (weights in float32, optimizer state, recipe, metrics line), then the retention;
    after the other epochs the metrics line alone. Only the process that ``writes`` (rank 0) touches the prefix."""

    def __init__(self, prefix, last_epoch, save_period=1, keep_last=3, keep_every=10, writes=True, logger=logging):
        self.prefix, self.last_epoch, self.save_period = prefix, last_epoch, save_period
        self.keep_last, self.keep_every, self.writes, self.logger = keep_last, keep_every, writes, logger

    @classmethod
    def from_options(cls, options, writes=True, logger=logging):
        """The policy of a run's ``options`` ({destination: value} of its flags)."""
        return cls(options["model_prefix"], options["num_epochs"], options["save_period"], options["keep_last"],
                   options["keep_every"], writes, logger)

    def clean_up(self, overwrite=False):
        """At the start of a run: remove what interrupted saves left, and with ``overwrite`` the prefix's run."""
        if not self.writes:
            return
        removed = checkpoint.remove_stale_temporaries(self.prefix)
        if removed:
            self.logger.info("removed %d temporary files of interrupted checkpoint writes under %s", removed,
                             self.prefix)
        for epoch, paths in checkpoint.remove_uncommitted(self.prefix).items():
            self.logger.info("removed the files of epoch %d, whose save did not finish: %s", epoch, ", ".join(paths))
        deleted = checkpoint.remove_run(self.prefix) if overwrite else 0
        if deleted:
            self.logger.warning("--overwrite: deleted the %d files of the run under %s", deleted, self.prefix)

    def begin(self, model_info, begin_epoch):
        """Before the first epoch: the model description, and the metrics of the epochs up to ``begin_epoch`` (a
        resumed run replaces what followed)."""
        if not self.writes:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.prefix)), exist_ok=True)
        checkpoint.save_model_info(self.prefix, model_info)
        checkpoint.write_metrics(self.prefix, through=begin_epoch)

    def save(self, module, symbol, recipe, epochs_done, summary):
        """After epoch ``epochs_done`` of ``module`` (whose graph, in the authors' arrangement, is ``symbol``):
        what the policy writes, with ``recipe`` and the epoch's ``summary``."""
        if not self.writes:
            return
        if epochs_done % self.save_period and epochs_done != self.last_epoch:
            checkpoint.write_metrics(self.prefix, summary)
            return
        arg, aux = module.get_params()
        checkpoint.save(self.prefix, epochs_done, symbol, checkpoint.float32_params(arg, fit.master_weights(module)),
                        checkpoint.float32_params(aux), module.save_optimizer_states,
                        recipe=dict(recipe, epoch=epochs_done), metrics=summary)
        self.logger.info("saved %s", checkpoint.params_path(self.prefix, epochs_done))
        for path in apply_retention(self.prefix, self.keep_last, self.keep_every):
            self.logger.info("retention: deleted %s", path)
