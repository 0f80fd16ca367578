"""The files of a run: paths, atomic writes, parameters, optimizer states, recipes and metrics, which epochs are
committed, retention, and one-line errors for missing or damaged files. Which network a parameter file holds is
``dpn_mxnet.identify``.

Layout under a prefix P (the MXNet convention, so ``mx.model.load_checkpoint`` reads ours too):
``P-symbol.json``, ``P-NNNN.params`` (keys ``arg:``/``aux:``, float32), ``P-NNNN.states`` (optimizer) and, for
ours, ``P-model.json`` (network configuration, classes, classifier name, training size), ``P-NNNN.recipe.json``
(``dpn_mxnet.recipe``: how the run was made) and ``P-metrics.jsonl`` (one epoch summary per line). Each file is
written to a temporary name and renamed. A training checkpoint is a set: .states, recipe and .params, then the
epoch's metrics line, which lists the sizes of the set's files and so commits it; an epoch counts only once that line
is there and its files are whole (``epoch_problem``). Files of an epoch that was never committed are leftovers of an
interrupted save, which the next run removes (``remove_uncommitted``). Without a metrics file (weights written by
the tools) an epoch counts when its .params, written last, exists.
"""
import glob
import json
import os
import re
import signal
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from dpn_mxnet.recipe import load as read_recipe

from .checks import describe_error


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the requested model."""


def params_path(prefix, epoch):
    return "%s-%04d.params" % (prefix, epoch)


def states_path(prefix, epoch):
    return "%s-%04d.states" % (prefix, epoch)


def symbol_path(prefix):
    return "%s-symbol.json" % prefix


def model_path(prefix):
    return "%s-model.json" % prefix


def recipe_path(prefix, epoch):
    return "%s-%04d.recipe.json" % (prefix, epoch)


def metrics_path(prefix):
    return "%s-metrics.jsonl" % prefix


def epoch_files(prefix, epoch):
    """{kind: path} of the files of a checkpoint set."""
    return {"params": params_path(prefix, epoch), "states": states_path(prefix, epoch),
            "recipe": recipe_path(prefix, epoch)}


_TEMPORARY = re.compile(r"\.tmp-(\d+)$")
_EPOCH_FILE = re.compile(r"-(\d{4,})\.(params|states|recipe\.json)$")
# Tests only: "NAME:STEP[:N]" makes the process SIGKILL itself at the N-th (default first) time ``atomic_write``
# reaches STEP ("written": the temporary file is whole; "renamed": it is in place) for the file named NAME.
KILL_AT_ENV = "DPN_TEST_KILL_AT"
_kill_counts = {}


def _test_kill_point(path, step):
    target = os.environ.get(KILL_AT_ENV)
    if not target:
        return
    name, _, rest = target.partition(":")
    wanted_step, _, nth = rest.partition(":")
    if (name, wanted_step) == (os.path.basename(path), step):
        _kill_counts[target] = _kill_counts.get(target, 0) + 1
        if _kill_counts[target] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path, write):
    """Call ``write(tmp)`` then rename tmp to ``path``: readers see the old file or the whole new one."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        write(tmp)
        _test_kill_point(path, "written")
        os.replace(tmp, path)
        _test_kill_point(path, "renamed")
    except (OSError, mx.base.MXNetError) as error:  # e.g. a full disk
        raise CheckpointError("%s: cannot write it: %s" % (path, describe_error(error))) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(prefix):
    """Delete the temporaries (``P-*.tmp-PID``) that ``atomic_write`` left when its process was killed: those of
    PIDs no longer alive on this machine. Returns how many were removed."""
    removed = 0
    for path in glob.glob(glob.escape(prefix) + "-*.tmp-*"):
        match = _TEMPORARY.search(path)
        if match and not _alive(int(match.group(1))):
            try:
                os.remove(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def save_model_info(prefix, info):
    """Record how the network was built (``symbols.resolve`` input, classes, classifier, image size)."""
    atomic_write(model_path(prefix), lambda tmp: _write_json(tmp, info))


def load_model_info(prefix):
    """Our ``P-model.json``, or None for checkpoints made elsewhere (e.g. the authors' releases)."""
    path = model_path(prefix)
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CheckpointError("%s: not a readable model description (%s); the train command that made it writes "
                              "it again" % (path, describe_error(error))) from None
    if not isinstance(info, dict) or "network" not in info:
        raise CheckpointError("%s: not a model description (expected a JSON object with 'network')" % path)
    return info


def save(prefix, epoch, symbol, arg_params, aux_params, save_states=None, recipe=None, metrics=None):
    """Write symbol, optimizer states (``save_states(path)``, optional), the recipe (optional) and the params, each
    atomically, then, given the epoch's ``metrics``, its line in the metrics file with the sizes of the set's files,
    which commits the set. A failure removes the files of the set that this call created and leaves the metrics
    file as it was."""
    atomic_write(symbol_path(prefix), symbol.save)
    saved = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    saved.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    files, written = epoch_files(prefix, epoch), []
    try:
        for kind, write in (("states", save_states),
                            ("recipe", recipe and (lambda tmp: _write_json(tmp, recipe))),
                            ("params", lambda tmp: mx.nd.save(tmp, saved))):
            if write is not None:
                new = not os.path.exists(files[kind])
                atomic_write(files[kind], write)
                written.append((kind, new))
        if metrics is not None:
            sizes = {kind: os.path.getsize(files[kind]) for kind, _ in written}
            write_metrics(prefix, dict(metrics, checkpoint=sizes))
    except BaseException:
        for kind, new in written:
            if new:
                _remove(files[kind])
        raise


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def float32_params(params, masters=None):
    """``params`` as a checkpoint holds them: float32 everywhere, a float16 tensor replaced by its float32 master
    copy from ``masters`` ({name: array}, multi-precision SGD's) where there is one, else cast."""
    masters = masters or {}
    return {name: masters[name].copy() if name in masters else value.astype("float32") if value.dtype != np.float32
            else value for name, value in params.items()}


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)


def load_recipe(prefix, epoch):
    """The recipe saved with epoch ``epoch`` (``dpn_mxnet.recipe.load``), or None for checkpoints written without
    one."""
    path = recipe_path(prefix, epoch)
    return read_recipe(path) if os.path.isfile(path) else None


def read_metrics(path):
    """The epoch summaries of a ``P-metrics.jsonl`` file, in epoch order (an empty list if there is none); a line
    that is not an epoch summary is a CheckpointError naming the file and the line."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    summaries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            summary = json.loads(line)
        except ValueError as error:
            raise CheckpointError("%s line %d: not a JSON epoch summary (%s)" % (path, number, error)) from None
        if not isinstance(summary, dict) or not isinstance(summary.get("epoch"), int):
            raise CheckpointError("%s line %d: not an epoch summary (expected a JSON object with an integer "
                                  "'epoch')" % (path, number))
        summaries.append(summary)
    return sorted(summaries, key=lambda s: s["epoch"])


def write_metrics(prefix, summary=None, through=None):
    """Record ``summary`` (a dict with its ``epoch``) in ``P-metrics.jsonl`` after the lines of the epochs before
    it; lines of later epochs (left by the run that a resumed run replaces) are dropped, as are, with
    ``through`` and no summary, the lines after epoch ``through``. The whole file is rewritten to a temporary file
    and renamed, like every checkpoint file: readers see whole lines only, and dropping lines needs a rewrite
    anyway (the file holds one short line per epoch)."""
    last = summary["epoch"] - 1 if summary is not None else through
    kept = [s for s in read_metrics(metrics_path(prefix)) if s["epoch"] <= last] + ([summary] if summary else [])

    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(json.dumps(s) + "\n" for s in kept)
    atomic_write(metrics_path(prefix), write)


def available_epochs(prefix):
    """Epochs under ``prefix`` whose weights count, ascending: those with a .params file and, in a training run's
    prefix (one with a metrics file), a committed set whose .params and recipe are whole (``epoch_problem``; the
    retention may have deleted the .states of older epochs)."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4,})\.params$")
    found = (pattern.match(os.path.basename(p)) for p in glob.glob(glob.escape(prefix) + "-*.params"))
    epochs = sorted(int(m.group(1)) for m in found if m)
    if not os.path.exists(metrics_path(prefix)):
        return epochs
    committed = {s["epoch"]: s for s in read_metrics(metrics_path(prefix))}
    return [e for e in epochs if e in committed and epoch_problem(prefix, committed[e], ("params", "recipe")) is None]


def epoch_problem(prefix, summary, kinds=("params", "states", "recipe")):
    """Why the set committed by the metrics line ``summary`` is not whole, for the files ``kinds`` (one phrase), or
    None. A line without the sizes (a run older than them) counts when its .params exists."""
    files, sizes = epoch_files(prefix, summary["epoch"]), summary.get("checkpoint")
    if sizes is None:
        sizes = {kind: None for kind in kinds if kind != "recipe" and os.path.exists(files["params"])}
    if "params" not in sizes:
        return "it was not saved (--save-period)"
    for kind in kinds:
        if kind not in sizes:
            continue
        if not os.path.exists(files[kind]):
            return "%s is missing" % files[kind]
        size = os.path.getsize(files[kind])
        if sizes[kind] is not None and size != sizes[kind]:
            return "%s has %d bytes, not the %d it was saved with" % (files[kind], size, sizes[kind])
    return None


def resume_problem(prefix, epoch):
    """Why a run cannot continue from ``epoch`` (one of ``available_epochs``) as if it had not stopped, e.g. its
    .states is missing or cut short, or None."""
    if not os.path.exists(metrics_path(prefix)):
        return None if os.path.exists(states_path(prefix, epoch)) else "%s is missing" % states_path(prefix, epoch)
    summary = {s["epoch"]: s for s in read_metrics(metrics_path(prefix))}[epoch]
    return epoch_problem(prefix, summary)


def epoch_paths(prefix):
    """{epoch: [paths]} of the .params, .states and recipe files under ``prefix``."""
    found = {}
    for path in glob.glob(glob.escape(prefix) + "-*"):
        match = _EPOCH_FILE.search(os.path.basename(path))
        if match and os.path.basename(path)[:match.start()] == os.path.basename(prefix):
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def remove_uncommitted(prefix):
    """Delete the files of the epochs after the last one in the metrics file: what an interrupted save left (the
    metrics line that commits a set is written last). Returns {epoch: [paths deleted]}."""
    summaries = read_metrics(metrics_path(prefix))
    last = summaries[-1]["epoch"] if summaries else 0
    removed = {}
    for epoch, paths in sorted(epoch_paths(prefix).items()):
        if epoch > last:
            for path in paths:
                _remove(path)
            removed[epoch] = sorted(paths)
    return removed


def remove_run(prefix):
    """Delete the checkpoint sets and the metrics file of the run under ``prefix`` (for --overwrite); returns the
    number of files deleted."""
    paths = [path for paths in epoch_paths(prefix).values() for path in paths]
    paths += [metrics_path(prefix)] if os.path.exists(metrics_path(prefix)) else []
    for path in paths:
        _remove(path)
    return len(paths)


def load_params(path):
    """(arg_params, aux_params) from a .params file with ``arg:``/``aux:`` keys (Module) or plain names (Gluon)."""
    if not os.path.isfile(path):
        raise CheckpointError("%s: no such parameter file" % path)
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError:
        raise CheckpointError("%s: not a readable MXNet parameter file (truncated or corrupt?)" % path) from None
    if not isinstance(saved, dict) or not saved:
        raise CheckpointError("%s: holds no named parameters" % path)
    arg_params, aux_params = {}, {}
    for key, value in saved.items():
        kind, _, name = key.rpartition(":")
        if not kind:
            kind = "aux" if name.endswith(("_moving_mean", "_moving_var")) else "arg"
        (aux_params if kind == "aux" else arg_params)[name] = value
    return arg_params, aux_params


def missing_epoch(prefix, epoch):
    """The CheckpointError for an epoch that is not there, naming those that are."""
    epochs = available_epochs(prefix)
    found = ("epochs saved under %s: %s" % (prefix, ", ".join(map(str, epochs))) if epochs
             else "no checkpoints exist under prefix %s" % prefix)
    return CheckpointError("%s not found; %s" % (params_path(prefix, epoch), found))


@dataclass
class Checkpoint:
    arg_params: dict
    aux_params: dict
    info: dict = None          # our P-model.json, None for foreign checkpoints
    epoch: int = 0


def load(prefix, epoch):
    """Load ``prefix-epoch.params``; a missing epoch names the epochs that do exist."""
    path = params_path(prefix, epoch)
    if not os.path.isfile(path):
        raise missing_epoch(prefix, epoch)
    arg_params, aux_params = load_params(path)
    return Checkpoint(arg_params, aux_params, load_model_info(prefix), epoch)
