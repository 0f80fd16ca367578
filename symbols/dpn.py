"""DPN graphs as MXNet symbols, in any arrangement (symbols/arrangement.py).

``features`` builds every graph the project binds (``logits`` and ``get_symbol`` add the training and inference
heads, ``symbols.meanmax`` the test graph's, ``symbols.gluon`` wraps ``logits`` in a block). With every switch
off it is the authors' ``get_before_pool`` node for node (same ops, attributes, names and input order); each
switch replaces one construct with the oneDNN trick of ``symbols.cpu_fast`` of the same name, with the same
parameters and function.
"""
import contextlib

import mxnet as mx

from .arrangement import AUTHORS
from .config import default_classifier, resolve
from .cpu_fast import (BLOCK, Tensor, concat, conv, conv_widened, conv_width, grouped_conv, plain, stacked_rows,
                       weight_rows)

STEM_STRIDE = 2
POOL_STRIDE = 2
BN_SETTINGS = {"fix_gamma": False, "momentum": 0.9}  # the authors' BatchNorm (MXNet's default eps, 1e-3)


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


STEM_NAME = "conv1_x_1"


def parameter_layers(network):
    """The authors' layers that hold parameters, in graph order, as (unit, layer, bn, conv).

    ``unit`` is the stem (``STEM_NAME``), a DualPath unit of ``units`` or the final BN-ReLU (``final_name``);
    ``layer`` the part of a unit ('c1x1-w(s/1)', 'c1x1-w(s/2)', 'c1x1-a', 'c3x3-b', 'c1x1-c', and 'c1x1-c1',
    'c1x1-c2' for ``split_c``), '' for the stem and the final BN-ReLU; ``bn`` the BatchNorm's name (arguments
    ``_gamma``, ``_beta``, auxiliary states ``_moving_mean``, ``_moving_var``) and ``conv`` the convolution's
    (argument ``_weight``), either None where the layer has none. The classifier is not listed.
    """
    cfg = resolve(network)
    yield STEM_NAME, "", STEM_NAME + "__relu-sp__bn", STEM_NAME + "__conv"
    for name, _, _, _, kind in units(cfg):
        parts = ([projection_name(name, kind)] if kind != "normal" else []) + [name + "_c1x1-a", name + "_c3x3-b"]
        if not cfg.split_c:
            parts.append(name + "_c1x1-c")
        for part in parts:
            yield name, part[len(name) + 1:], part + "__bn__bn", part + "__conv"
        if cfg.split_c:
            yield name, "c1x1-c", name + "_c1x1-c__bn", None
            for half in ("c1x1-c1", "c1x1-c2"):
                yield name, half, None, "%s_%s__conv" % (name, half)
    last = final_name(cfg)
    yield last, "", last + "__relu-sp__bn", None


def _bn_relu(x, prefix, arrangement, fuse=False, conv_unit=True):
    """The authors' BN-ReLU ``prefix``: BatchNorm ``P__bn__bn`` and ReLU ``P__ac__relu`` in their BN_AC_Conv unit
    (``conv_unit``), ``P__bn`` and ``P__relu`` in their BN_AC unit. With ``fuse``, on blocked input, one
    BatchNormWithReLU named as the BatchNorm; other arrangements than the authors' name a separate ReLU so too,
    with ``_relu`` added."""
    bn_name, relu_name = (prefix + "__bn__bn", prefix + "__ac__relu") if conv_unit else (prefix + "__bn",
                                                                                        prefix + "__relu")
    if fuse and x.blocked:
        return x._replace(sym=mx.sym.contrib.BatchNormWithReLU(data=x.sym, name=bn_name, **BN_SETTINGS))
    if arrangement != AUTHORS:
        relu_name = bn_name + "_relu"
    out = mx.sym.Activation(data=mx.sym.BatchNorm(data=x.sym, name=bn_name, **BN_SETTINGS), act_type="relu",
                            name=relu_name)
    return x._replace(sym=out)


def _fuse_after_conv(arrangement):
    """Whether a BN-ReLU that follows a convolution is fused: not where it is left for oneDNN to fold."""
    return arrangement.fuse_bn_relu and not arrangement.fold_for_inference


def _gradient_in_blocks(widths, arrangement):
    """Whether the 1x1 convolution after a BN-ReLU, with outputs in parts of these widths, hands the gradient back
    in 16-channel blocks, which a fused BN-ReLU on 16-channel blocks needs (oneDNN's BatchNormWithReLU cannot mix
    layouts): with split_weight_rows each part is padded to a multiple of 16 (``conv_width``); otherwise a width
    that is not a multiple of 16 runs oneDNN's AVX2 kernel, whose gradient comes in 8-channel blocks even on an
    AVX-512 CPU."""
    return arrangement.split_weight_rows or all(width % BLOCK == 0 for width in widths)


def _row_convs(x, prefix, rows, widths, stride=1):
    """One 1x1 convolution ``<prefix>__conv-part<i>`` per weight in ``rows``, of these widths."""
    return [conv_width(x, "%s__conv-part%d" % (prefix, i + 1), weight, width, stride)
            for i, (weight, width) in enumerate(zip(rows, widths))]


def _conv_parts(x, prefix, widths, stride, arrangement):
    """The 1x1 convolution ``prefix`` with sum(widths) outputs, in parts of these widths: its output sliced
    (``<prefix>-split<i>``), or with split_weight_rows one convolution per part of its weight's rows."""
    if arrangement.split_weight_rows:
        return _row_convs(x, prefix, weight_rows(prefix, widths, x.channels), widths, stride)
    out = conv(x, prefix + "__conv", sum(widths), stride=stride)
    bounds = [(sum(widths[:i]), sum(widths[:i + 1])) for i in range(len(widths))]
    return [Tensor(mx.sym.slice_axis(data=out.sym, axis=1, begin=begin, end=end, name="%s-split%d" % (prefix, i + 1)),
                   end - begin, False) for i, (begin, end) in enumerate(bounds)]


def _bottleneck(x_in, name, r, groups, stride, arrangement):
    """The 1x1-a and grouped 3x3-b convolutions of a unit, each after its BN-ReLU.

    With recompute_3x3 the backward pass recomputes the BN-ReLU-3x3 from the 1x1-a's output rather than keep the
    ReLU's output (MXNet's mirroring, here of a convolution cheap enough to run twice; MXNet updates BN's moving
    statistics in the backward pass, so they are still updated once per step)."""
    a = _bn_relu(x_in, name + "_c1x1-a", arrangement, arrangement.fuse_bn_relu and r % BLOCK == 0)
    if arrangement.widen_1x1a_input:
        a = conv_widened(a, name + "_c1x1-a__conv", r)
    else:
        a = conv(a, name + "_c1x1-a__conv", r)
    if arrangement.merge_groups and not arrangement.fold_for_inference and r % BLOCK == 0 and not a.blocked:
        a = plain(a, name + "_c1x1-a__plain")  # 8-channel blocks would meet 16-channel gradients
    with mx.AttrScope(force_mirroring="True") if arrangement.recompute_3x3 else contextlib.nullcontext():
        b = _bn_relu(a, name + "_c3x3-b", arrangement, _fuse_after_conv(arrangement))
        if arrangement.merge_groups:
            return grouped_conv(b, name + "_c3x3-b", r, groups, stride)
        return conv(b, name + "_c3x3-b__conv", r, 3, stride, groups)


def _last_bn_relu(b, name, bw, inc, split_c, arrangement):
    """The BN-ReLU before the last 1x1 convolution (the authors' BN_AC unit when that convolution is split)."""
    fuse = _fuse_after_conv(arrangement) and _gradient_in_blocks((bw, inc), arrangement)
    return _bn_relu(b, name + "_c1x1-c", arrangement, fuse, conv_unit=not split_c)


def _last_rows(name, r, bw, inc, split_c):
    """The residual and dense weight rows of the last 1x1 convolution: two parameters with ``split_c``, else
    slices of one."""
    if split_c:
        return [mx.sym.var("%s_c1x1-c%d__conv_weight" % (name, i), shape=(width, r, 1, 1))
                for i, width in ((1, bw), (2, inc))]
    return weight_rows(name + "_c1x1-c", (bw, inc), r)


def _last_convs(c, name, r, bw, inc, split_c, arrangement):
    """The residual and dense outputs of the last 1x1 convolution of a unit, whose input is ``c``."""
    if arrangement.split_weight_rows:
        return _row_convs(c, name + "_c1x1-c", _last_rows(name, r, bw, inc, split_c), (bw, inc))
    if split_c:
        return [conv(c, "%s_c1x1-c%d__conv" % (name, i), width) for i, width in ((1, bw), (2, inc))]
    return _conv_parts(c, name + "_c1x1-c", (bw, inc), 1, arrangement)


def _unit(x, name, r, bw, inc, groups, kind, split_c, arrangement):
    """One DualPath unit on ``x``, a [residual, dense] pair (the stem's output alone for the first unit).

    ``kind`` is 'proj' (first unit, stride 1), 'down' (first unit of a later stage, stride 2) or 'normal'.
    Returns the new [residual, dense] pair.
    """
    stride = 2 if kind == "down" else 1
    x_in = concat(x, name + "_cat-input")
    if kind == "normal":
        residual, dense = x
    else:
        proj = projection_name(name, kind)
        fuse = arrangement.fuse_bn_relu and _gradient_in_blocks((bw, 2 * inc), arrangement)
        residual, dense = _conv_parts(_bn_relu(x_in, proj, arrangement, fuse), proj, (bw, 2 * inc), stride,
                                      arrangement)
    b = _bottleneck(x_in, name, r, groups, stride, arrangement)
    out_res, out_dense = _last_convs(_last_bn_relu(b, name, bw, inc, split_c, arrangement), name, r, bw, inc,
                                     split_c, arrangement)
    total = mx.sym.ElementWiseSum(residual.sym, out_res.sym, name=name + "_sum")
    return [Tensor(total, bw, residual.blocked and out_res.blocked), concat([dense, out_dense], name + "_cat")]


def _packed_unit(x, name, r, bw, inc, groups, kind, split_c, arrangement):
    """A unit (pack_units) on the single Tensor ``x`` = [residual | dense], which it returns for the next unit as
    a sum: what carries over (``x`` and the new dense channels, or the projection with zero rows for them) plus
    the last 1x1 convolution's new residual channels, padded with zero rows.

    oneDNN's Concat keeps its inputs for the backward pass: ``_unit`` concatenates a new residual sum and dense path
    that nothing else needs, this form only ``x``, which BatchNorm keeps anyway, and the few new dense channels.
    The zero rows cost products that are thrown away."""
    stride = 2 if kind == "down" else 1
    width = (x.channels if kind == "normal" else bw + 2 * inc) + inc
    b = _bottleneck(x, name, r, groups, stride, arrangement)
    c = _last_bn_relu(b, name, bw, inc, split_c, arrangement)
    res_rows, dense_rows = _last_rows(name, r, bw, inc, split_c)
    if kind == "normal":
        carry = concat([x, conv_width(c, name + "_c1x1-c__conv-dense", dense_rows, inc)], name + "_cat")
        if x.channels % BLOCK:  # oneDNN cannot split a blocked gradient inside a block: hand the Concat a plain one
            carry = plain(carry, name + "_cat__plain")
        new_rows = [res_rows, width - bw]
    else:
        proj = projection_name(name, kind)
        weight = mx.sym.var(proj + "__conv_weight", shape=(bw + 2 * inc, x.channels, 1, 1))
        carry = conv_width(_bn_relu(x, proj, arrangement, arrangement.fuse_bn_relu), proj + "__conv",
                           stacked_rows([weight, inc], x.channels, proj), width, stride)
        new_rows = [res_rows, 2 * inc, dense_rows]
    update = conv_width(c, name + "_c1x1-c__conv", stacked_rows(new_rows, r, name + "_c1x1-c"), width)
    return Tensor(mx.sym.ElementWiseSum(carry.sym, update.sym, name=name + "_sum"), width,
                  carry.blocked and update.blocked)


def features(network="dpn92", data=None, arrangement=AUTHORS):
    """The feature map before pooling (after the final BN-ReLU) of ``network`` (a name, JSON or DPNConfig) in
    ``arrangement``: the authors' ``get_before_pool`` with every switch off."""
    cfg = resolve(network)
    data = mx.sym.var("data") if data is None else data
    stem = conv(Tensor(data, 3, False), STEM_NAME + "__conv", cfg.stem_filters, cfg.stem_kernel, STEM_STRIDE)
    stem = _bn_relu(stem, STEM_NAME + "__relu-sp", arrangement, conv_unit=False)  # unfused: pooling's gradients
    pool = mx.sym.Pooling(data=stem.sym, kernel=(3, 3), stride=(POOL_STRIDE,) * 2, pad=(1, 1), pool_type="max",
                          name="pool1")
    x = stem._replace(sym=pool)
    if arrangement.pack_units:
        for name, r, bw, inc, kind in units(cfg):
            x = _packed_unit(x, name, r, bw, inc, cfg.groups, kind, cfg.split_c, arrangement)
    else:
        x = [x]
        for name, r, bw, inc, kind in units(cfg):
            x = _unit(x, name, r, bw, inc, cfg.groups, kind, cfg.split_c, arrangement)
        x = concat(x, final_name(cfg) + "_cat-final")
    return _bn_relu(x, final_name(cfg) + "__relu-sp", arrangement, conv_unit=False).sym


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


def logits(network="dpn92", num_classes=1000, classifier=None, image_size=224, dtype="float32", *,
           arrangement=AUTHORS):
    """Features, average pooling and the classifier (no softmax).

    At the size where the features are 7x7 (224 for the variants) the pooling is the authors' 7x7, stride 1
    ``pool5``; at any other size it is global average pooling. With ``dtype='float16'`` the network runs in half
    precision between a cast of the input and a cast of the logits back to float32 (the authors' arrangement
    only).
    """
    check_num_classes(num_classes)
    check_image_size(network, image_size)
    if arrangement != AUTHORS and dtype != "float32":
        raise ValueError("arrangements other than the authors' run in float32 only, not %s" % dtype)
    data = mx.sym.var("data")
    if dtype != "float32":
        data = mx.sym.Cast(data=data, dtype=dtype, name="data_" + dtype)
    feats = features(network, data, arrangement)
    if feature_size(network, image_size) == 7:
        pooled = mx.sym.Pooling(data=feats, kernel=(7, 7), stride=(1, 1), pool_type="avg", name="pool5")
    else:
        pooled = mx.sym.Pooling(data=feats, kernel=(1, 1), global_pool=True, pool_type="avg", name="pool5")
    classifier = classifier or default_classifier(resolve(network), num_classes)
    out = mx.sym.FullyConnected(data=mx.sym.Flatten(data=pooled, name="flatten"), num_hidden=num_classes,
                                name=classifier)
    return out if dtype == "float32" else mx.sym.Cast(data=out, dtype="float32", name=classifier + "_float32")


def get_symbol(network="dpn92", num_classes=1000, classifier=None, image_size=224, dtype="float32", *,
               arrangement=AUTHORS):
    """The training graph: ``logits`` followed by SoftmaxOutput ``softmax`` (the authors' graph by default)."""
    return mx.sym.SoftmaxOutput(data=logits(network, num_classes, classifier, image_size, dtype,
                                            arrangement=arrangement), name="softmax")
