"""DPN graphs as MXNet symbols, node for node the authors' (same ops, attributes, names and input order).

``features`` is the authors' ``get_before_pool``; ``get_symbol`` adds their training head. With
``cpu_fast=True`` (or ``"lean"``) they build the CPU variant of ``symbols.cpu_fast`` instead: the same
parameters and function, arranged for oneDNN's fast kernels.
"""
import mxnet as mx

from .config import default_classifier, resolve

STEM_STRIDE = 2
POOL_STRIDE = 2
BN_SETTINGS = {"fix_gamma": False, "momentum": 0.9}  # the authors' BatchNorm (MXNet's default eps, 1e-3)


def _batchnorm(data, name):
    return mx.sym.BatchNorm(data=data, name=name, **BN_SETTINGS)


def _conv(data, name, num_filter, kernel, stride=1, groups=1):
    return mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=(kernel // 2, kernel // 2), num_group=groups, no_bias=True, name=name + "__conv")


def _bn_relu(data, name):
    """The authors' BN_AC unit: BatchNorm ``N__bn``, ReLU ``N__relu``."""
    return mx.sym.Activation(data=_batchnorm(data, name + "__bn"), act_type="relu", name=name + "__relu")


def _bn_relu_conv(data, name, num_filter, kernel, stride=1, groups=1):
    """The authors' pre-activation BN_AC_Conv unit: ``N__bn__bn``, ``N__ac__relu``, ``N__conv``."""
    act = mx.sym.Activation(data=_batchnorm(data, name + "__bn__bn"), act_type="relu", name=name + "__ac__relu")
    return _conv(act, name, num_filter, kernel, stride, groups)


def _split(data, name, width, total):
    first = mx.sym.slice_axis(data=data, axis=1, begin=0, end=width, name=name + "-split1")
    second = mx.sym.slice_axis(data=data, axis=1, begin=width, end=total, name=name + "-split2")
    return first, second


def units(cfg):
    """The DualPath units in order, as (name, r, bw, inc, kind): stage s = 2.. has widths k_r * 2**i and
    bw_base * 2**i (i = s - 2); its first unit is 'proj' (conv2) or 'down' (later stages), the others 'normal'."""
    for i, (blocks, inc) in enumerate(zip(cfg.k_sec, cfg.inc_sec)):
        for b in range(1, blocks + 1):
            kind = "normal" if b > 1 else ("proj" if i == 0 else "down")
            yield "conv%d_x__%d" % (i + 2, b), cfg.k_r << i, cfg.bw_base << i, inc, kind


def projection_name(name, kind):
    """The projection 1x1 of a 'proj' (stride 1) or 'down' (stride 2) unit."""
    return "%s_c1x1-w(s/%d)" % (name, 1 if kind == "proj" else 2)


def final_name(cfg):
    """Prefix of the final concatenation and BN-ReLU after the last stage."""
    return "conv%d_x_x" % (len(cfg.k_sec) + 1)


def dual_path_unit(data, name, r, bw, inc, groups, kind, split_c=False):
    """One DualPath block; ``data`` is a tensor (first block) or a [residual, dense] pair.

    ``kind`` is 'proj' (first block, stride 1), 'down' (first block of a later stage, stride 2) or 'normal'.
    Returns the new [residual, dense] pair.
    """
    stride = 2 if kind == "down" else 1
    x_in = data if not isinstance(data, list) else mx.sym.Concat(*data, name=name + "_cat-input")
    if kind == "normal":
        residual, dense = data
    else:
        proj_name = projection_name(name, kind)
        proj = _bn_relu_conv(x_in, proj_name, bw + 2 * inc, 1, stride)
        residual, dense = _split(proj, proj_name, bw, bw + 2 * inc)
    a = _bn_relu_conv(x_in, name + "_c1x1-a", r, 1)
    b = _bn_relu_conv(a, name + "_c3x3-b", r, 3, stride, groups)
    if split_c:
        c = _bn_relu(b, name + "_c1x1-c")
        out_res, out_dense = _conv(c, name + "_c1x1-c1", bw, 1), _conv(c, name + "_c1x1-c2", inc, 1)
    else:
        c = _bn_relu_conv(b, name + "_c1x1-c", bw + inc, 1)
        out_res, out_dense = _split(c, name + "_c1x1-c", bw, bw + inc)
    return [mx.sym.ElementWiseSum(residual, out_res, name=name + "_sum"),
            mx.sym.Concat(dense, out_dense, name=name + "_cat")]


def features(network="dpn92", data=None, cpu_fast=False, for_training=False):
    """The feature map before pooling (after the final BN-ReLU): the authors' ``get_before_pool``, or with
    ``cpu_fast`` its CPU variant (True, or "lean" for its less memory-hungry form), arranged for training or for
    inference (``for_training``; the same function either way)."""
    cfg = resolve(network)
    data = mx.sym.var("data") if data is None else data
    if cpu_fast:
        from .cpu_fast import fast_features  # late: that module builds on this one's helpers
        return fast_features(cfg, data, lean=cpu_fast == "lean", for_training=for_training)
    stem = _conv(data, "conv1_x_1", cfg.stem_filters, cfg.stem_kernel, STEM_STRIDE)
    x = mx.sym.Pooling(data=_bn_relu(stem, "conv1_x_1__relu-sp"), kernel=(3, 3), stride=(POOL_STRIDE,) * 2,
                       pad=(1, 1), pool_type="max", name="pool1")
    for name, r, bw, inc, kind in units(cfg):
        x = dual_path_unit(x, name, r, bw, inc, cfg.groups, kind, cfg.split_c)
    last = final_name(cfg)
    return _bn_relu(mx.sym.Concat(*x, name=last + "_cat-final"), last + "__relu-sp")


def feature_channels(network):
    """Channels of the feature map (832 or 2688 for the variants): the last stage's residual width plus its
    dense path, which each stage's projection restarts with 2 * inc channels and every block grows by inc."""
    cfg = resolve(network)
    last = len(cfg.k_sec) - 1
    return (cfg.bw_base << last) + (cfg.k_sec[last] + 2) * cfg.inc_sec[last]


def feature_size(network, image_size):
    """Side of the feature map for a square input (7 at 224, 10 at 320)."""
    cfg = resolve(network)
    side = (image_size + 2 * (cfg.stem_kernel // 2) - cfg.stem_kernel) // STEM_STRIDE + 1
    side = (side - 1) // POOL_STRIDE + 1
    for _ in cfg.k_sec[1:]:
        side = (side - 1) // 2 + 1
    return side


def min_image_size(network):
    """The smallest input a DPN accepts: its total stride."""
    return STEM_STRIDE * POOL_STRIDE * 2 ** (len(resolve(network).k_sec) - 1)


def check_image_size(network, image_size):
    limit = min_image_size(network)
    if image_size < limit:
        raise ValueError("input size %d is too small for this DPN: it needs at least %d px (its total stride)"
                         % (image_size, limit))


def check_num_classes(num_classes):
    if num_classes <= 0:
        raise ValueError("num_classes must be a positive integer (1000 for ImageNet-1k, 4786 for ImageNet-5k, "
                         "365 for Places365), got %r" % num_classes)


def logits(network="dpn92", num_classes=1000, classifier=None, image_size=224, cpu_fast=False,
           dtype="float32", for_training=False):
    """Features, average pooling and the classifier (no softmax).

    At the size where the features are 7x7 (224 for the variants) the pooling is the authors' 7x7, stride 1
    ``pool5``; at any other size it is global average pooling. With ``dtype='float16'`` the network runs in half
    precision between a cast of the input and a cast of the logits back to float32. ``cpu_fast`` selects the CPU
    variant (float32 only): True, or "lean" (see ``symbols.cpu_fast``), arranged for training with
    ``for_training``.
    """
    check_num_classes(num_classes)
    check_image_size(network, image_size)
    if cpu_fast and dtype != "float32":
        raise ValueError("the CPU variant (cpu_fast) runs in float32 only, not %s" % dtype)
    data = mx.sym.var("data")
    if dtype != "float32":
        data = mx.sym.Cast(data=data, dtype=dtype, name="data_" + dtype)
    feats = features(network, data, cpu_fast, for_training)
    if feature_size(network, image_size) == 7:
        pooled = mx.sym.Pooling(data=feats, kernel=(7, 7), stride=(1, 1), pool_type="avg", name="pool5")
    else:
        pooled = mx.sym.Pooling(data=feats, kernel=(1, 1), global_pool=True, pool_type="avg", name="pool5")
    classifier = classifier or default_classifier(resolve(network), num_classes)
    out = mx.sym.FullyConnected(data=mx.sym.Flatten(data=pooled, name="flatten"), num_hidden=num_classes,
                                name=classifier)
    return out if dtype == "float32" else mx.sym.Cast(data=out, dtype="float32", name=classifier + "_float32")


def get_symbol(network="dpn92", num_classes=1000, classifier=None, image_size=224, cpu_fast=False,
               dtype="float32"):
    """The authors' training graph: ``logits`` (the CPU variant arranged for training) followed by SoftmaxOutput
    ``softmax``."""
    return mx.sym.SoftmaxOutput(data=logits(network, num_classes, classifier, image_size, cpu_fast, dtype,
                                            for_training=True), name="softmax")
