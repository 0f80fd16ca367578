"""Arrangements of a DPN graph: which oneDNN tricks (symbols/cpu_fast.py) the graph builder uses.

Every arrangement has the authors' parameters and computes their function; only the operators differ. The
authors' graph is the arrangement with every switch off. docs/cpu_arrangement.md says what each trick gains.
"""
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Arrangement:
    """Named switches, each one trick of ``symbols.cpu_fast`` that ``symbols.features`` applies."""

    merge_groups: bool = False           # grouped 3x3 convolutions merged into groups of a multiple of 16 channels
    split_weight_rows: bool = False      # a 1x1 convolution cut in parts: one convolution per part of its weight
    fuse_bn_relu: bool = False           # BatchNorm and ReLU as one BatchNormWithReLU where oneDNN allows it
    widen_1x1a_input: bool = False       # zero channels added to the 1x1-a's input up to a multiple of 16
    recompute_3x3: bool = False          # the backward pass recomputes each BN-ReLU-3x3 instead of keeping it
    pack_units: bool = False             # units hand on one [residual | dense] tensor built from weight rows
    fold_for_inference: bool = False     # no backward pass: BN-ReLU after a convolution left for oneDNN to fold

    def __post_init__(self):
        """Refuses the combinations that cannot be built, or that train wrongly."""
        if self.pack_units and not self.split_weight_rows:
            raise ValueError("an arrangement with pack_units needs split_weight_rows (packed units are built from "
                             "weight rows)")
        if self.fuse_bn_relu and not self.fold_for_inference and not (self.merge_groups and self.widen_1x1a_input):
            raise ValueError("an arrangement with fuse_bn_relu needs merge_groups and widen_1x1a_input (or "
                             "fold_for_inference): oneDNN's BatchNormWithReLU returns wrong gradients on the "
                             "layouts it meets otherwise (docs/cpu_arrangement.md)")

    def for_inference(self):
        """The arrangement of the same graph bound for inference only: the BN-ReLUs fused after a convolution
        are left apart, for oneDNN to fold into it once the binding layer has precomputed the convolution's
        weight, and the 1x1-a's input is not widened (docs/cpu_arrangement.md). An arrangement that fuses no
        BN-ReLU is bound for inference as it is."""
        if not self.fuse_bn_relu:
            return self
        return replace(self, widen_1x1a_input=False, fold_for_inference=True)


AUTHORS = Arrangement()
CPU = Arrangement(merge_groups=True, split_weight_rows=True, fuse_bn_relu=True, widen_1x1a_input=True)
CPU_LEAN = Arrangement(merge_groups=True, split_weight_rows=True, recompute_3x3=True, pack_units=True)

# The arrangements a user chooses by name (--arrangement); each is bound for inference as its for_inference().
ARRANGEMENTS = {"authors": AUTHORS, "cpu": CPU, "cpu-lean": CPU_LEAN}
