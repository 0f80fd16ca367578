"""The CPU variant of the DPN graphs (``get_symbol(..., cpu_fast=True)``, or ``cpu_fast="lean"``), which training
and prediction run on oneDNN CPUs.

It has the authors' parameters (names and shapes) and computes the same function; only the arrangement of the
operators differs, so that oneDNN, MXNet's CPU backend, keeps activations in its 16-channel blocked layout,
where its batch-norm and convolution kernels are fast. Found with ``DNNL_VERBOSE=1``, in the authors' graph:

- grouped 3x3 convolutions with 3 to 12 channels per group produce 4- or 8-channel blocks, on which oneDNN
  runs its scalar reference batch norm. Here ``m`` neighbouring groups are merged into one group of a multiple
  of 16 channels whose weight is block-diagonal: the real weight, with zeros between the blocks, is assembled
  inside the graph, so the extra products are exact zeros and the gradient reaches the real weight;
- a 1x1 convolution whose output is sliced into residual and dense parts: each slice reorders the whole tensor
  to plain NCHW. Here the weight's rows are sliced instead and each part gets its own convolution; a part of
  a width that is not a multiple of 16 (DPN-92's dense growth of 24) runs with zero rows added up to one;
- BatchNorm then ReLU as two passes: here one ``BatchNormWithReLU`` where the input is blocked and every
  gradient returns in 16-channel blocks (the fused kernel refuses to mix layouts, and on plain tensors it is
  slower than the pair).

A 1x1 convolution reading a width that is not a multiple of 16 (DPN-92's stage 4) runs oneDNN's AVX2 kernel at
half the speed and writes 8-channel blocks. In the graph arranged for training (``get_symbol``) the 1x1-a's input
gets zero channels up to a multiple of 16; elsewhere such outputs, and any grouped convolution whose groups cannot
merge, pass through identity transposes, which hand plain tensors on.

Arranged for inference (``logits``, ``score_logits``), the BN-ReLU after each 1x1-a and 3x3-b convolution stays a
BatchNorm and an Activation, which MXNet's oneDNN subgraph pass folds into the convolution (its weights and a ReLU
post-op) when the convolution's weight is a bound array, not one this module assembles inside the graph. Such a
graph is bound after ``symbols.precompute_weights``, which computes those weights once: DPN-68 at batch 16 then
runs 11 % faster than with fused BatchNormWithReLU operators, which nothing folds.

The "lean" form (``--cpu-fast lean``) gives up some of that speed for memory; DPN-92 training at batch 16 plans
2.5 GB of activations instead of 4.35 GB (README, Memory):

- BatchNorm and ReLU stay two operators: MXNet gives the fused one a full-size float workspace for its ReLU
  mask, where the separate ReLU works in place;
- a unit hands the next one a single tensor, [residual | dense], built so that none of oneDNN's Concat inputs,
  which it keeps for the backward pass, is a tensor kept for that alone (``_packed_unit``);
- the backward pass recomputes each BN-ReLU-3x3 from the 1x1-a's output instead of keeping the ReLU's output
  (``_bottleneck``).
"""
import contextlib
import math
import os
from typing import NamedTuple

import mxnet as mx

from .dpn import BN_SETTINGS, POOL_STRIDE, STEM_STRIDE, final_name, projection_name, units

BLOCK = 16  # channels per block of oneDNN's AVX-512 layouts

# Set before binding a CPU training graph: MXNet's memory planner lets tensors share a buffer when their sizes
# are within this factor (default 16); with 2 it plans 10 to 16 % less memory for DPN training (DPN-92, batch 16:
# 3.79 -> 3.19 GB for the authors' graph, 4.88 -> 4.35 GB for the variant, 2.76 -> 2.49 GB for its lean form)
# at no measured cost in speed.
BIND_ENVIRONMENT = {"NNVM_EXEC_MATCH_RANGE": "2"}


# --cpu-fast of the entry points -> get_symbol's cpu_fast ("auto" is decided by select_variant)
CHOICES = {"auto": None, "on": True, "lean": "lean", "off": False}


def use_cpu_fast(contexts):
    """Whether the variant helps on these devices: on CPUs with MXNet's oneDNN backend, not on GPUs."""
    return (all(ctx.device_type == "cpu" for ctx in contexts) and mx.runtime.Features().is_enabled("MKLDNN")
            and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0")


def select_variant(choice, contexts, dtype="float32"):
    """``get_symbol``'s ``cpu_fast`` for a ``--cpu-fast`` choice (auto, on, lean or off) on ``contexts``: "auto"
    takes the variant where it helps (float32 on oneDNN CPUs). Once a variant is taken, BIND_ENVIRONMENT is set
    (unless already set), since MXNet reads it when the graph is bound."""
    if choice not in CHOICES:
        raise ValueError("--cpu-fast: expected one of %s, got %r" % (", ".join(CHOICES), choice))
    if choice in ("on", "lean") and not use_cpu_fast(contexts):
        raise ValueError("--cpu-fast %s needs CPU contexts and MXNet's oneDNN backend" % choice)
    variant = use_cpu_fast(contexts) and dtype == "float32" if choice == "auto" else CHOICES[choice]
    if variant:
        for name, value in BIND_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    return variant


class Tensor(NamedTuple):
    """An activation with its channel count and whether oneDNN will hold it in 16-channel blocks."""
    sym: mx.sym.Symbol
    channels: int
    blocked: bool


def _multiples(*channels):
    return all(c % BLOCK == 0 for c in channels)


def _writes_blocks(in_channels, out_channels):
    """Whether oneDNN's convolution writes 16-channel blocks: when the output width is a multiple of 16 and the
    input width is too, or is under 16 (the stem reads 3 channels, the first unit the stem's few)."""
    return out_channels % BLOCK == 0 and (in_channels % BLOCK == 0 or in_channels < BLOCK)


def _bn_relu(x, name, fuse):
    """BatchNorm ``name`` and ReLU; with ``fuse``, one oneDNN kernel on blocked input."""
    if fuse and x.blocked:
        out = mx.sym.contrib.BatchNormWithReLU(data=x.sym, name=name, **BN_SETTINGS)
    else:
        out = mx.sym.Activation(data=mx.sym.BatchNorm(data=x.sym, name=name, **BN_SETTINGS), act_type="relu",
                                name=name + "_relu")
    return x._replace(sym=out)


def _conv(x, name, num_filter, kernel=1, stride=1, groups=1, weight=None):
    """A convolution without bias."""
    extra = {} if weight is None else {"weight": weight}
    out = mx.sym.Convolution(data=x.sym, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                             pad=(kernel // 2, kernel // 2), num_group=groups, no_bias=True, name=name, **extra)
    return Tensor(out, num_filter, _writes_blocks(x.channels, num_filter))


def _concat(pieces, name):
    if len(pieces) == 1:
        return pieces[0]
    out = mx.sym.Concat(*[p.sym for p in pieces], name=name)
    return Tensor(out, sum(p.channels for p in pieces), all(p.blocked for p in pieces))


def _plain(x, name):
    """``x`` through an identity transpose, which hands the next oneDNN kernels a plain NCHW tensor."""
    return Tensor(mx.sym.transpose(x.sym, axes=(0, 1, 2, 3), name=name), x.channels, False)


def _stacked_rows(blocks, in_channels, name):
    """A 1x1 convolution weight stacked from blocks of weight rows (symbols) and of zero rows (counts)."""
    parts = [mx.sym.zeros((block, in_channels, 1, 1), name="%s_zero-rows%d" % (name, i)) if isinstance(block, int)
             else block for i, block in enumerate(blocks)]
    return mx.sym.Concat(*parts, dim=0, name=name + "_stacked-rows")


def _conv_width(x, name, weight, width, stride=1):
    """A 1x1 convolution with ``width`` outputs and the symbol ``weight``; a width that is not a multiple of 16
    runs with zero weight rows up to one (so that its gradient comes back in 16-channel blocks too) and is cut
    back to ``width`` after."""
    padded = -(-width // BLOCK) * BLOCK
    if padded == width:
        return _conv(x, name, width, stride=stride, weight=weight)
    out = _conv(x, name, padded, stride=stride, weight=_stacked_rows([weight, padded - width], x.channels, name))
    return Tensor(mx.sym.slice_axis(out.sym, axis=1, begin=0, end=width, name=name + "_cut"), width, False)


def _conv_parts(x, name, widths, stride):
    """The 1x1 convolution ``name`` with sum(widths) outputs, as one convolution per part of its weight's rows
    (not one output sliced, which would reorder the whole output to plain NCHW)."""
    weight = mx.sym.var(name + "__conv_weight", shape=(sum(widths), x.channels, 1, 1))
    bounds = [(sum(widths[:i]), sum(widths[:i + 1])) for i in range(len(widths))]
    return [_conv_width(x, "%s__conv-part%d" % (name, i + 1), stride=stride, width=end - begin,
                        weight=mx.sym.slice_axis(weight, axis=0, begin=begin, end=end, name="%s__rows%d" % (name, i)))
            for i, (begin, end) in enumerate(bounds)]


def _merge_factor(r, groups):
    """How many neighbouring groups make a group of a multiple of 16 channels; None when they cannot."""
    per_group = r // groups
    m = math.lcm(per_group, BLOCK) // per_group
    return m if groups % m == 0 else None


def _grouped_conv(x, name, r, groups, stride):
    """The grouped 3x3 convolution ``name``: as it is when its groups hold multiples of 16 channels, else merged
    block-diagonally, or, where groups cannot merge so, between identity transposes (plain layouts)."""
    per_group = r // groups
    if per_group % BLOCK == 0:
        return _conv(x, name + "__conv", r, 3, stride, groups)
    m = _merge_factor(r, groups)
    if not m:
        out = _conv(_plain(x, name + "__plain_in"), name + "__conv", r, 3, stride, groups)
        return _plain(out, name + "__plain_out")
    weight = mx.sym.var(name + "__conv_weight", shape=(r, per_group, 3, 3))
    position = mx.sym.arange(0, groups, repeat=per_group, name=name + "__group") % m  # of each output channel
    mask = mx.sym.one_hot(position, depth=m, name=name + "__mask").reshape((r, m, 1, 1, 1))
    merged = mx.sym.broadcast_mul(weight.reshape((r, 1, per_group, 3, 3)), mask, name=name + "__merged")
    return _conv(x, name + "__conv", r, 3, stride, groups // m, weight=merged.reshape((r, m * per_group, 3, 3)))


def _conv_widened(x, name, num_filter):
    """The 1x1 convolution ``name`` of ``x`` with zero channels added to ``x`` up to a multiple of 16 (and zero
    columns to its weight): oneDNN then runs its AVX-512 kernel instead of the AVX2 one, about twice as fast."""
    extra = -x.channels % BLOCK
    if not extra:
        return _conv(x, name, num_filter)
    zeros = Tensor(mx.sym.zeros((0, extra, 0, 0), name=name + "_zero-channels"), extra, False)  # shape from x
    # plain: the Concat's backward could not cut a blocked gradient inside a block
    widened = _plain(_concat([x, zeros], name + "_widened"), name + "_widened-plain")
    weight = mx.sym.Concat(mx.sym.var(name + "_weight", shape=(num_filter, x.channels, 1, 1)),
                           mx.sym.zeros((num_filter, extra, 1, 1), name=name + "_zero-columns"), dim=1,
                           name=name + "_widened-weight")
    return _conv(widened, name, num_filter, weight=weight)


def _bottleneck(x_in, name, r, groups, stride, form):
    """The 1x1-a and grouped 3x3-b convolutions of a unit, each after its BN-ReLU, in ``form``: "train", "infer"
    or "lean" (the module's docstring).

    Arranged for training, the 1x1-a's input is widened to a multiple of 16 channels (DPN-92's stage 4, whose
    widths 1072 + 24k alternate): 4 to 10 % more training speed for 190 MB more memory. Arranged for inference,
    each convolution is followed by a plain BatchNorm and ReLU, which oneDNN folds into it. The lean form has the
    backward pass recompute the BN-ReLU-3x3 from the 1x1-a's output rather than keep the ReLU's output (MXNet's
    mirroring, here of a convolution cheap enough to run twice; MXNet updates BN's moving statistics in the
    backward pass, so they are still updated once per step)."""
    bn = _bn_relu(x_in, name + "_c1x1-a__bn__bn", form != "lean" and r % BLOCK == 0)
    a = _conv_widened(bn, name + "_c1x1-a__conv", r) if form == "train" else _conv(bn, name + "_c1x1-a__conv", r)
    if form != "infer" and r % BLOCK == 0 and not a.blocked:  # 8-channel blocks would meet 16-channel gradients
        a = _plain(a, name + "_c1x1-a__plain")
    with mx.AttrScope(force_mirroring="True") if form == "lean" else contextlib.nullcontext():
        return _grouped_conv(_bn_relu(a, name + "_c3x3-b__bn__bn", form == "train"), name + "_c3x3-b", r, groups,
                             stride)


def _last_conv_rows(b, name, r, bw, inc, split_c, fuse):
    """The BN-ReLU before the last 1x1 convolution, and that convolution's residual and dense weight rows."""
    if split_c:
        weights = [mx.sym.var("%s_c1x1-c%d__conv_weight" % (name, i), shape=(width, r, 1, 1))
                   for i, width in ((1, bw), (2, inc))]
        return _bn_relu(b, name + "_c1x1-c__bn", fuse), weights
    weight = mx.sym.var(name + "_c1x1-c__conv_weight", shape=(bw + inc, r, 1, 1))
    rows = [mx.sym.slice_axis(weight, axis=0, begin=begin, end=end, name="%s_c1x1-c__rows%d" % (name, i))
            for i, (begin, end) in enumerate(((0, bw), (bw, bw + inc)))]
    return _bn_relu(b, name + "_c1x1-c__bn__bn", fuse), rows


def _unit(x, name, r, bw, inc, groups, kind, split_c, for_training):
    """One DualPath unit (see ``dpn.dual_path_unit``) on Tensors; returns the [residual, dense] pair."""
    stride = 2 if kind == "down" else 1
    x_in = _concat(x, name + "_cat-input")
    if kind == "normal":
        residual, dense = x
    else:
        proj = projection_name(name, kind)
        residual, dense = _conv_parts(_bn_relu(x_in, proj + "__bn__bn", True), proj, (bw, 2 * inc), stride)
    b = _bottleneck(x_in, name, r, groups, stride, "train" if for_training else "infer")
    c, rows = _last_conv_rows(b, name, r, bw, inc, split_c, for_training)
    out_res, out_dense = (_conv_width(c, "%s_c1x1-c__conv-part%d" % (name, i + 1), weight, width)
                          for i, (weight, width) in enumerate(zip(rows, (bw, inc))))
    total = mx.sym.ElementWiseSum(residual.sym, out_res.sym, name=name + "_sum")
    return [Tensor(total, bw, residual.blocked and out_res.blocked), _concat([dense, out_dense], name + "_cat")]


def _packed_unit(x, name, r, bw, inc, groups, kind, split_c):
    """The lean form of a unit (BN and ReLU unfused) on the single Tensor ``x`` = [residual | dense], which it
    returns for the next unit as a sum: what carries over (``x`` and the new dense channels, or the projection
    with zero rows for them) plus the last 1x1 convolution's new residual channels, padded with zero rows.

    oneDNN's Concat keeps its inputs for the backward pass: ``_unit`` concatenates a new residual sum and dense path
    that nothing else needs, this form only ``x``, which BatchNorm keeps anyway, and the few new dense channels.
    The zero rows cost products that are thrown away."""
    stride = 2 if kind == "down" else 1
    width = (x.channels if kind == "normal" else bw + 2 * inc) + inc
    b = _bottleneck(x, name, r, groups, stride, "lean")
    c, (res_rows, dense_rows) = _last_conv_rows(b, name, r, bw, inc, split_c, False)
    if kind == "normal":
        carry = _concat([x, _conv_width(c, name + "_c1x1-c__conv-dense", dense_rows, inc)], name + "_cat")
        if x.channels % BLOCK:  # oneDNN cannot split a blocked gradient inside a block: hand the Concat a plain one
            carry = _plain(carry, name + "_cat__plain")
        new_rows = [res_rows, width - bw]
    else:
        proj = projection_name(name, kind)
        weight = mx.sym.var(proj + "__conv_weight", shape=(bw + 2 * inc, x.channels, 1, 1))
        carry = _conv_width(_bn_relu(x, proj + "__bn__bn", False), proj + "__conv",
                            _stacked_rows([weight, inc], x.channels, proj), width, stride)
        new_rows = [res_rows, 2 * inc, dense_rows]
    update = _conv_width(c, name + "_c1x1-c__conv", _stacked_rows(new_rows, r, name + "_c1x1-c"), width)
    return Tensor(mx.sym.ElementWiseSum(carry.sym, update.sym, name=name + "_sum"), width,
                  carry.blocked and update.blocked)


def fast_features(cfg, data, lean=False, for_training=False):
    """``dpn.features`` of DPNConfig ``cfg`` as the CPU variant: its low-memory form with ``lean``, else its fast
    form, arranged for training with ``for_training``."""
    stem = _conv(Tensor(data, 3, False), "conv1_x_1__conv", cfg.stem_filters, cfg.stem_kernel, STEM_STRIDE)
    stem = _bn_relu(stem, "conv1_x_1__relu-sp__bn", False)  # pooling's gradients come in other layouts
    pool = mx.sym.Pooling(data=stem.sym, kernel=(3, 3), stride=(POOL_STRIDE,) * 2, pad=(1, 1), pool_type="max",
                          name="pool1")
    x = stem._replace(sym=pool)
    if lean:
        for name, r, bw, inc, kind in units(cfg):
            x = _packed_unit(x, name, r, bw, inc, cfg.groups, kind, cfg.split_c)
    else:
        x = [x]
        for name, r, bw, inc, kind in units(cfg):
            x = _unit(x, name, r, bw, inc, cfg.groups, kind, cfg.split_c, for_training)
        x = _concat(x, final_name(cfg) + "_cat-final")
    return _bn_relu(x, final_name(cfg) + "__relu-sp__bn", False).sym
