"""The oneDNN tricks of the CPU arrangements, as operations on Tensors (symbols/arrangement.py names them).

oneDNN, MXNet's CPU backend, is fast on activations held in its 16-channel blocked layout. Found with
``DNNL_VERBOSE=1`` in the authors' graph, and the trick for each (the ``Arrangement`` switch in brackets):

- grouped 3x3 convolutions with 3 to 12 channels per group produce 4- or 8-channel blocks, on which oneDNN
  runs its scalar reference batch norm. ``grouped_conv`` merges ``m`` neighbouring groups into one group of a
  multiple of 16 channels whose weight is block-diagonal: the real weight, with zeros between the blocks,
  assembled inside the graph, so the extra products are exact zeros and the gradient reaches the real weight
  (merge_groups);
- a 1x1 convolution whose output is sliced into residual and dense parts: each slice reorders the whole tensor
  to plain NCHW. ``weight_rows`` slices the weight's rows instead, and ``conv_width`` gives each part its own
  convolution, with zero rows up to a multiple of 16 (DPN-92's dense growth of 24) (split_weight_rows);
- BatchNorm then ReLU as two passes, where one ``BatchNormWithReLU`` does on blocked input whose gradient
  returns in 16-channel blocks (the fused kernel refuses to mix layouts, and on plain tensors it is slower than
  the pair) (fuse_bn_relu);
- a 1x1 convolution reading a width that is not a multiple of 16 (DPN-92's stage 4) runs oneDNN's AVX2 kernel
  instead of its AVX-512 one and writes 8-channel blocks; ``conv_widened`` adds zero channels to its input
  (widen_1x1a_input). Elsewhere such outputs, and grouped convolutions whose groups cannot merge, pass through
  identity transposes (``plain``), which hand plain tensors on.

In a graph bound for inference only (fold_for_inference), the BN-ReLU after a convolution stays a BatchNorm and
an Activation, which MXNet's oneDNN subgraph pass folds into the convolution (its weights and a ReLU post-op)
when the convolution's weight is a bound array: the binding layer precomputes the weights these operations
assemble inside the graph (``symbols.precompute_weights``).

For less memory (the cpu-lean arrangement): BatchNorm and ReLU stay two operators, since MXNet gives the fused
one a full-size float workspace for its ReLU mask where the separate ReLU works in place; units hand on one
tensor (pack_units, ``symbols.dpn``); the backward pass recomputes each BN-ReLU-3x3 (recompute_3x3).
"""
import math
from typing import NamedTuple

import mxnet as mx

BLOCK = 16  # channels per block of oneDNN's AVX-512 layouts


class Tensor(NamedTuple):
    """An activation with its channel count and whether oneDNN will hold it in 16-channel blocks."""
    sym: mx.sym.Symbol
    channels: int
    blocked: bool


def _writes_blocks(in_channels, out_channels):
    """Whether oneDNN's convolution writes 16-channel blocks: when the output width is a multiple of 16 and the
    input width is too, or is under 16 (the stem reads 3 channels, the first unit the stem's few)."""
    return out_channels % BLOCK == 0 and (in_channels % BLOCK == 0 or in_channels < BLOCK)


def conv(x, name, num_filter, kernel=1, stride=1, groups=1, weight=None):
    """A convolution without bias; its weight is the variable ``<name>_weight`` unless ``weight`` is given."""
    extra = {} if weight is None else {"weight": weight}
    out = mx.sym.Convolution(data=x.sym, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                             pad=(kernel // 2, kernel // 2), num_group=groups, no_bias=True, name=name, **extra)
    return Tensor(out, num_filter, _writes_blocks(x.channels, num_filter))


def concat(pieces, name):
    """The channels of ``pieces`` in order (a single piece as it is)."""
    if len(pieces) == 1:
        return pieces[0]
    out = mx.sym.Concat(*[p.sym for p in pieces], name=name)
    return Tensor(out, sum(p.channels for p in pieces), all(p.blocked for p in pieces))


def plain(x, name):
    """``x`` through an identity transpose, which hands the next oneDNN kernels a plain NCHW tensor."""
    return Tensor(mx.sym.transpose(x.sym, axes=(0, 1, 2, 3), name=name), x.channels, False)


def stacked_rows(blocks, in_channels, name):
    """A 1x1 convolution weight stacked from blocks of weight rows (symbols) and of zero rows (counts)."""
    parts = [mx.sym.zeros((block, in_channels, 1, 1), name="%s_zero-rows%d" % (name, i)) if isinstance(block, int)
             else block for i, block in enumerate(blocks)]
    return mx.sym.Concat(*parts, dim=0, name=name + "_stacked-rows")


def weight_rows(prefix, widths, in_channels):
    """The weight ``<prefix>__conv_weight`` of a 1x1 convolution with sum(widths) outputs, as slices of its rows
    of these widths."""
    weight = mx.sym.var(prefix + "__conv_weight", shape=(sum(widths), in_channels, 1, 1))
    bounds = [(sum(widths[:i]), sum(widths[:i + 1])) for i in range(len(widths))]
    return [mx.sym.slice_axis(weight, axis=0, begin=begin, end=end, name="%s__rows%d" % (prefix, i))
            for i, (begin, end) in enumerate(bounds)]


def conv_width(x, name, weight, width, stride=1):
    """A 1x1 convolution with ``width`` outputs and the symbol ``weight``; a width that is not a multiple of 16
    runs with zero weight rows up to one (so that its gradient comes back in 16-channel blocks too) and is cut
    back to ``width`` after."""
    padded = -(-width // BLOCK) * BLOCK
    if padded == width:
        return conv(x, name, width, stride=stride, weight=weight)
    out = conv(x, name, padded, stride=stride, weight=stacked_rows([weight, padded - width], x.channels, name))
    return Tensor(mx.sym.slice_axis(out.sym, axis=1, begin=0, end=width, name=name + "_cut"), width, False)


def _merge_factor(r, groups):
    """How many neighbouring groups make a group of a multiple of 16 channels; None when they cannot."""
    per_group = r // groups
    m = math.lcm(per_group, BLOCK) // per_group
    return m if groups % m == 0 else None


def grouped_conv(x, name, r, groups, stride):
    """The grouped 3x3 convolution ``name``: as it is when its groups hold multiples of 16 channels, else merged
    block-diagonally, or, where groups cannot merge so, between identity transposes (plain layouts)."""
    per_group = r // groups
    if per_group % BLOCK == 0:
        return conv(x, name + "__conv", r, 3, stride, groups)
    m = _merge_factor(r, groups)
    if not m:
        out = conv(plain(x, name + "__plain_in"), name + "__conv", r, 3, stride, groups)
        return plain(out, name + "__plain_out")
    weight = mx.sym.var(name + "__conv_weight", shape=(r, per_group, 3, 3))
    position = mx.sym.arange(0, groups, repeat=per_group, name=name + "__group") % m  # of each output channel
    mask = mx.sym.one_hot(position, depth=m, name=name + "__mask").reshape((r, m, 1, 1, 1))
    merged = mx.sym.broadcast_mul(weight.reshape((r, 1, per_group, 3, 3)), mask, name=name + "__merged")
    return conv(x, name + "__conv", r, 3, stride, groups // m, weight=merged.reshape((r, m * per_group, 3, 3)))


def conv_widened(x, name, num_filter):
    """The 1x1 convolution ``name`` of ``x`` with zero channels added to ``x`` up to a multiple of 16 (and zero
    columns to its weight), so that oneDNN runs its AVX-512 kernel instead of the AVX2 one."""
    extra = -x.channels % BLOCK
    if not extra:
        return conv(x, name, num_filter)
    zeros = Tensor(mx.sym.zeros((0, extra, 0, 0), name=name + "_zero-channels"), extra, False)  # shape from x
    # plain: the Concat's backward could not cut a blocked gradient inside a block
    widened = plain(concat([x, zeros], name + "_widened"), name + "_widened-plain")
    weight = mx.sym.Concat(mx.sym.var(name + "_weight", shape=(num_filter, x.channels, 1, 1)),
                           mx.sym.zeros((num_filter, extra, 1, 1), name=name + "_zero-columns"), dim=1,
                           name=name + "_widened-weight")
    return conv(widened, name, num_filter, weight=weight)
