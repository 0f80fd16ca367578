"""timm's DPN state dict <-> this project's parameters (the authors' names), checked strictly both ways.

The key mapping comes from ``symbols.parameter_layers`` (the graph's own enumeration of its layers): timm
names the stem ``features.conv1_1``, unit ``convS_x__B`` ``features.convS_B`` (parts ``c1x1_w_s1``, ``c1x1_a``,
...), the final BN-ReLU ``features.conv5_bn_ac`` and the classifier ``classifier`` (a 1x1 convolution, so its
weight is ours with two trailing unit axes). BatchNorm gamma, beta, moving mean and variance are timm's weight,
bias, running_mean and running_var; timm's ``num_batches_tracked`` step counters have no counterpart and are
written as 0. The timm side is read and written with safetensors' NumPy API, or as .pth where PyTorch is
installed.
"""
import os
import re

import mxnet as mx
import numpy as np

import symbols
from dpn_mxnet import checkpoint
from dpn_mxnet.checkpoint import CheckpointError
from dpn_mxnet.identify import parameter_shapes

BN_PAIRS = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_var", "running_var"))
AUXILIARY = ("moving_mean", "moving_var")
STEP_COUNTER = "num_batches_tracked"
TIMM_PARTS = {"c1x1-w(s/1)": "c1x1_w_s1", "c1x1-w(s/2)": "c1x1_w_s2", "c1x1-a": "c1x1_a", "c3x3-b": "c3x3_b",
              "c1x1-c": "c1x1_c", "c1x1-c1": "c1x1_c1", "c1x1-c2": "c1x1_c2"}
CLASSIFIER = "classifier"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def timm_module(network, unit):
    """timm's module path of one of ``parameter_layers``' units."""
    cfg = symbols.resolve(network)
    if unit == symbols.STEM_NAME:
        return "features.conv1_1"
    if unit == symbols.final_name(cfg):
        return "features.conv%d_bn_ac" % (len(cfg.k_sec) + 1)
    stage, block = re.fullmatch(r"conv(\d+)_x__(\d+)", unit).groups()
    return "features.conv%s_%s" % (stage, block)


def key_pairs(network, classifier):
    """[(our parameter name, 'arg' or 'aux', timm key)] for every tensor of ``network``, in graph order."""
    pairs = []
    for unit, layer, bn, conv in symbols.parameter_layers(network):
        module = timm_module(network, unit) + ("." + TIMM_PARTS[layer] if layer else "")
        if bn:
            pairs += [("%s_%s" % (bn, ours), "aux" if ours in AUXILIARY else "arg", "%s.bn.%s" % (module, theirs))
                      for ours, theirs in BN_PAIRS]
        if conv:
            pairs.append((conv + "_weight", "arg", module + (".conv.weight" if bn else ".weight")))
    return pairs + [(classifier + "_weight", "arg", CLASSIFIER + ".weight"),
                    (classifier + "_bias", "arg", CLASSIFIER + ".bias")]


def step_counters(network):
    """timm's ``num_batches_tracked`` key of every BatchNorm."""
    return [key.rpartition(".")[0] + "." + STEP_COUNTER
            for _, _, key in key_pairs(network, "fc6") if key.endswith(".running_var")]


def our_shapes(network, num_classes, classifier):
    """{our parameter name: shape} of ``network``, arguments and auxiliary states together."""
    args, aux = parameter_shapes(symbols.get_symbol(network, num_classes, classifier), (1, 3, 224, 224))
    return dict(args, **aux)


def timm_shape(key, shape):
    return tuple(shape) + (1, 1) if key == CLASSIFIER + ".weight" else tuple(shape)


def mismatch(given, expected, what, optional=()):
    """The first tensor of ``expected`` ({name: shape}) that ``given`` ({name: shape}) lacks or has in another
    shape, or the first tensor of ``given`` not expected (nor in ``optional``), in words; None if all fit."""
    for name, shape in expected.items():
        if name not in given:
            return "no tensor %s %s, which %s needs (truncated, or a file of another network?)" % (
                name, tuple(shape), what)
        if tuple(given[name]) != tuple(shape):
            return "tensor %s has shape %s but %s needs %s" % (name, tuple(given[name]), what, tuple(shape))
    extra = [name for name in given if name not in expected and name not in optional]
    if extra:
        return "tensor %s (and %d more) is not part of %s (a file of another network?)" % (
            extra[0], len(extra) - 1, what)
    return None


def check_tensors(given, expected, source, what, optional=()):
    """Raise CheckpointError, naming ``source``, unless ``given`` fits ``expected`` (see ``mismatch``)."""
    problem = mismatch(given, expected, what, optional)
    if problem:
        raise CheckpointError("%s: %s" % (source, problem))


def describe(network, num_classes, classifier):
    name = network if network in symbols.VARIANTS else "this DPN"
    return "%s with %d classes (classifier %s)" % (name, num_classes, classifier)


def to_timm(arg_params, aux_params, network, num_classes, classifier, source="the checkpoint"):
    """timm's state dict {key: float32 array} for our parameters; every tensor must be used exactly once."""
    given = dict(arg_params, **aux_params)
    check_tensors({k: v.shape for k, v in given.items()}, our_shapes(network, num_classes, classifier), source,
                  describe(network, num_classes, classifier))
    state = {}
    for ours, _, theirs in key_pairs(network, classifier):
        value = given[ours].asnumpy() if isinstance(given[ours], mx.nd.NDArray) else np.asarray(given[ours])
        state[theirs] = value.astype(np.float32, copy=False).reshape(timm_shape(theirs, value.shape))
        if theirs.endswith(".running_var"):
            state[theirs.rpartition(".")[0] + "." + STEP_COUNTER] = np.zeros((), np.int64)
    return state


def expected_timm(network, num_classes, classifier):
    """{timm key: shape} of ``network`` (step counters left out)."""
    shapes = our_shapes(network, num_classes, classifier)
    return {theirs: timm_shape(theirs, shapes[ours]) for ours, _, theirs in key_pairs(network, classifier)}


def identify(state, num_classes, source):
    """The variant whose every timm key and shape ``state`` matches; otherwise an error naming the first
    mismatch of the closest variant (the one with the most fitting tensors)."""
    shapes = {k: v.shape for k, v in state.items()}
    misses = []
    for network in symbols.VARIANTS:
        expected = expected_timm(network, num_classes, symbols.default_classifier(symbols.resolve(network),
                                                                                  num_classes))
        problem = mismatch(shapes, expected, network, step_counters(network))
        if problem is None:
            return network
        misses.append((sum(tuple(shapes.get(k, ())) == tuple(s) for k, s in expected.items()), network, problem))
    _, closest, problem = max(misses)
    raise CheckpointError("%s matches none of %s as a timm DPN state dict; closest is %s: %s; name the network "
                          "with --network" % (source, ", ".join(symbols.VARIANTS), closest, problem))


def from_timm(state, network=None, num_classes=None, classifier=None, source="the file"):
    """(network, num_classes, classifier, arg_params, aux_params) from timm's state dict {key: array}; the
    network is identified from the tensors unless given. Every tensor must be used exactly once (timm's step
    counters are the only tensors without a counterpart)."""
    head = CLASSIFIER + ".weight"
    if head not in state:
        raise CheckpointError("%s has no tensor %s: not a timm DPN state dict" % (source, head))
    own_classes = state[head].shape[0]
    if num_classes and num_classes != own_classes:
        raise CheckpointError("%s has %d classes (%s %s), not --num-classes %d"
                              % (source, own_classes, head, tuple(state[head].shape), num_classes))
    network = network or identify(state, own_classes, source)
    classifier = classifier or symbols.default_classifier(symbols.resolve(network), own_classes)
    check_tensors({k: v.shape for k, v in state.items()}, expected_timm(network, own_classes, classifier), source,
                  describe(network, own_classes, classifier), step_counters(network))
    arg_params, aux_params = {}, {}
    for ours, kind, theirs in key_pairs(network, classifier):
        value = state[theirs]
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError("%s: tensor %s is %s, not floating point" % (source, theirs, value.dtype))
        shape = value.shape[:2] if theirs == head else value.shape
        (aux_params if kind == "aux" else arg_params)[ours] = mx.nd.array(value.reshape(shape), dtype=np.float32)
    return network, own_classes, classifier, arg_params, aux_params


def read_state(path):
    """timm's state dict {key: NumPy array} from a .safetensors file, or a .pth file where PyTorch is installed."""
    if not os.path.isfile(path):
        raise CheckpointError("%s: no such file" % path)
    if path.endswith(TORCH_SUFFIXES):
        torch = _torch(path)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for a damaged file
            raise CheckpointError("%s: not a readable PyTorch file (%s)" % (path, str(err).splitlines()[0]))
        saved = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
        if not isinstance(saved, dict):
            raise CheckpointError("%s: holds no state dict" % path)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in saved.items()}
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, TypeError, ValueError) as err:
        raise CheckpointError("%s: not a readable safetensors file, truncated or corrupt? (%s)"
                              % (path, str(err).splitlines()[0])) from None


def write_state(path, state):
    """Write timm's state dict as .safetensors (or .pth where PyTorch is installed), atomically."""
    if path.endswith(TORCH_SUFFIXES):
        torch = _torch(path)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
        checkpoint.atomic_write(path, lambda tmp: torch.save(tensors, tmp))
        return
    from safetensors.numpy import save_file
    tensors = {k: np.ascontiguousarray(v) for k, v in state.items()}
    checkpoint.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def _torch(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError("%s: .pth files need PyTorch, which is not installed here; use a .safetensors file"
                              % path) from None
    return torch
