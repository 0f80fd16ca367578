"""Which network a parameter set holds: its classifier, the variant whose every tensor it fits, the model spec
(network, classes, classifier, training size) to rebuild it, and the subset of a file that fits another network
(--pretrained). Mismatches are ``CheckpointError``s naming the first tensor that does not fit."""
from dataclasses import dataclass

import symbols

from .checkpoint import Checkpoint, CheckpointError, load_params


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
