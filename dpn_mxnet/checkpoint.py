"""Checkpoints: atomic writes, our own and the authors' released files, and one-line errors when they do not fit.

Layout under a prefix P (the MXNet convention, so ``mx.model.load_checkpoint`` reads ours too):
``P-symbol.json``, ``P-NNNN.params`` (keys ``arg:``/``aux:``, float32), ``P-NNNN.states`` (optimizer) and, for
ours, ``P-model.json`` (network configuration, classes, classifier name, training size), ``P-NNNN.recipe.json``
(``dpn_mxnet.recipe``: how the run was made) and ``P-metrics.jsonl`` (one epoch summary per line). Each file is
written to a temporary name and renamed, and the .params file comes last, so an epoch whose .params exists is
complete.
"""
import glob
import json
import os
import re
from dataclasses import dataclass

import mxnet as mx
import numpy as np

import symbols
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


_TEMPORARY = re.compile(r"\.tmp-(\d+)$")


def atomic_write(path, write):
    """Call ``write(tmp)`` then rename tmp to ``path``: readers see the old file or the whole new one."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        write(tmp)
        os.replace(tmp, path)
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
    try:
        with open(model_path(prefix)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(prefix, epoch, symbol, arg_params, aux_params, save_states=None, recipe=None, metrics=None):
    """Write symbol, optimizer states (``save_states(path)``, optional), the recipe and the epoch's metrics
    (optional) and the params, each atomically, the params last."""
    atomic_write(symbol_path(prefix), symbol.save)
    if save_states is not None:
        atomic_write(states_path(prefix, epoch), save_states)
    if recipe is not None:
        atomic_write(recipe_path(prefix, epoch), lambda tmp: _write_json(tmp, recipe))
    if metrics is not None:
        write_metrics(prefix, metrics)
    saved = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    saved.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    atomic_write(params_path(prefix, epoch), lambda tmp: mx.nd.save(tmp, saved))


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
    """The epoch summaries of a ``P-metrics.jsonl`` file, in epoch order (an empty list if there is none)."""
    try:
        with open(path) as f:
            return sorted((json.loads(line) for line in f if line.strip()), key=lambda s: s["epoch"])
    except FileNotFoundError:
        return []


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


def apply_retention(prefix, keep_last, keep_every):
    """Delete what the retention keeps no longer: the last ``keep_last`` saved epochs keep .params, .states and
    recipe (0: every epoch keeps them); of the older ones, every ``keep_every``-th epoch keeps its .params and
    recipe (0: none). The .params goes first, so a cut-short deletion never leaves an epoch that looks complete
    without its states. Returns the paths deleted."""
    epochs = available_epochs(prefix)
    older = epochs[:-keep_last] if keep_last else []
    deleted = []
    for epoch in older:
        kept_params = keep_every and epoch % keep_every == 0
        paths = [states_path(prefix, epoch)] if kept_params else [
            params_path(prefix, epoch), states_path(prefix, epoch), recipe_path(prefix, epoch)]
        for path in paths:
            if os.path.exists(path):
                os.remove(path)
                deleted.append(path)
    return deleted


def available_epochs(prefix):
    """Epochs with a complete .params file under ``prefix``, ascending."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4,})\.params$")
    found = (pattern.match(os.path.basename(p)) for p in glob.glob(glob.escape(prefix) + "-*.params"))
    return sorted(int(m.group(1)) for m in found if m)


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
        epochs = available_epochs(prefix)
        found = ("epochs saved under %s: %s" % (prefix, ", ".join(map(str, epochs))) if epochs
                 else "no checkpoints exist under prefix %s" % prefix)
        raise CheckpointError("%s not found; %s" % (path, found))
    arg_params, aux_params = load_params(path)
    return Checkpoint(arg_params, aux_params, load_model_info(prefix), epoch)


def classifier_name(arg_params):
    """The classifier's layer name, read from the tensors (``fc6``, or ``fc6-1k`` in the 5k->1k releases)."""
    names = sorted(k[:-len("_weight")] for k, v in arg_params.items()
                   if k.endswith("_weight") and len(v.shape) == 2 and k[:-len("_weight")] + "_bias" in arg_params)
    if len(names) != 1:
        raise CheckpointError("cannot tell the classifier from the checkpoint: expected one fully-connected "
                              "weight/bias pair, found %s" % (names or "none"))
    return names[0]


def parameter_shapes(symbol, data_shape):
    """({argument: shape}, {auxiliary state: shape}) of ``symbol`` for inputs of ``data_shape``; the inputs (data
    and labels) are left out."""
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=data_shape)
    args = {name: tuple(shape) for name, shape in zip(symbol.list_arguments(), arg_shapes)
            if name != "data" and not name.endswith("_label")}
    return args, {name: tuple(shape) for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes)}


def check_fits(symbol, arg_params, aux_params, data_shape, what="the model"):
    """Raise CheckpointError naming the first tensor that is missing or has the wrong shape for ``symbol``."""
    arg_shapes, aux_shapes = parameter_shapes(symbol, data_shape)
    given = dict(arg_params, **aux_params)
    for name, shape in list(arg_shapes.items()) + list(aux_shapes.items()):
        if name not in given:
            raise CheckpointError("checkpoint has no tensor %s %s needed by %s" % (name, tuple(shape), what))
        if tuple(given[name].shape) != tuple(shape):
            raise CheckpointError("checkpoint tensor %s has shape %s but %s needs %s"
                                  % (name, tuple(given[name].shape), what, tuple(shape)))


@dataclass
class Pretrained:
    arg_params: dict
    aux_params: dict
    summary: str        # one line: what was loaded, what is left to the initializer, what of the file is unused


def pretrained_subset(path, symbol, classifier, data_shape, network):
    """The tensors of the parameter file ``path`` that fit ``symbol`` (the network ``network``, classifier layer
    ``classifier``). Every tensor of the feature extractor (all but the classifier's) must be among them, or
    CheckpointError names the file and the network its tensors belong to; another classifier is left to the
    initializer (fine-tuning), which the summary says."""
    arg_params, aux_params = load_params(path)
    arg_shapes, aux_shapes = parameter_shapes(symbol, data_shape)
    wanted = dict(arg_shapes, **aux_shapes)

    def fits(name, value):
        return tuple(wanted.get(name, ())) == tuple(value.shape)

    args = {n: v for n, v in arg_params.items() if fits(n, v)}
    aux = {n: v for n, v in aux_params.items() if fits(n, v)}
    unused = sorted(n for n, v in list(arg_params.items()) + list(aux_params.items()) if not fits(n, v))
    head = {classifier + "_weight", classifier + "_bias"}
    features = [n for n in list(arg_shapes) + list(aux_shapes) if n not in head]
    missing = [n for n in features if n not in args and n not in aux]
    if missing:
        raise CheckpointError("--pretrained %s: fits %d of the %d feature tensors of %s (e.g. %s is missing or of "
                              "another shape); its tensors are those of %s"
                              % (path, len(features) - len(missing), len(features), network, missing[0],
                                 _what_network(arg_params, aux_params)))
    initialised = sorted(n for n in arg_shapes if n not in args)
    summary = "%d of the network's %d tensors; left to the initializer: %s; unused in the file: %s" % (
        len(args) + len(aux), len(arg_shapes) + len(aux_shapes), _few(initialised), _few(unused))
    return Pretrained(args, aux, summary)


def _few(names, shown=4):
    """'a, b, c, d and 7 more' (or 'none')."""
    if not names:
        return "none"
    more = len(names) - shown
    return ", ".join(names[:shown]) + (" and %d more" % more if more > 0 else "")


def _what_network(arg_params, aux_params):
    """What a parameter set seems to be: 'dpn68 with 1000 classes (classifier fc6)', or why that is unknown."""
    try:
        classifier = classifier_name(arg_params)
        classes = arg_params[classifier + "_weight"].shape[0]
        variant = identify_variant(Checkpoint(arg_params, aux_params), classifier, classes)
        return "%s with %d classes (classifier %s)" % (variant, classes, classifier)
    except CheckpointError:
        return "no DPN variant of %s" % ", ".join(symbols.VARIANTS)


@dataclass
class ModelSpec:
    """How to rebuild the network a checkpoint belongs to."""
    network: str        # a variant name or a JSON DPN configuration (symbols.resolve input)
    num_classes: int
    classifier: str
    train_size: int


def model_spec(ckpt, network=None, num_classes=None):
    """Work out (and verify) the network of a checkpoint: from the arguments, our P-model.json, or by matching
    the tensors against every variant (the authors' files carry no description). Mismatches raise
    CheckpointError naming the first tensor that does not fit."""
    info = ckpt.info or {}
    classifier = classifier_name(ckpt.arg_params)
    own_classes = ckpt.arg_params[classifier + "_weight"].shape[0]
    num_classes = num_classes or info.get("num_classes") or own_classes
    train_size = info.get("image_size", 224)
    network = network or info.get("network") or identify_variant(ckpt, classifier, own_classes)
    what = "%s with %d classes" % (network if network in symbols.VARIANTS else "this DPN", num_classes)
    check_fits(symbols.get_symbol(network, num_classes, classifier, train_size), ckpt.arg_params, ckpt.aux_params,
               (1, 3, train_size, train_size), what)
    return ModelSpec(network, num_classes, classifier, train_size)


def identify_variant(ckpt, classifier, num_classes):
    """The DPN variant whose every tensor name and shape the checkpoint matches."""
    for candidate in symbols.VARIANTS:
        try:
            check_fits(symbols.get_symbol(candidate, num_classes, classifier), ckpt.arg_params, ckpt.aux_params,
                       (1, 3, 224, 224))
            return candidate
        except CheckpointError:
            continue
    raise CheckpointError("the checkpoint's tensors match none of %s; name the model"
                          % ", ".join(symbols.VARIANTS))
