"""The table of the authors' DPN variants (configuration and default batch of each) and custom configurations."""
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DPNConfig:
    """Everything that distinguishes one DPN from another.

    Stage s (s = 2 .. 1 + len(k_sec)) has residual width ``bw_base * 2**i`` and bottleneck width
    ``k_r * 2**i`` (i = s - 2), ``k_sec[i]`` blocks and dense growth ``inc_sec[i]`` per block.
    ``split_c`` selects the "_b" unit whose last 1x1 conv is two convs sharing one BN-ReLU.
    """

    stem_filters: int
    stem_kernel: int
    k_r: int
    groups: int
    k_sec: tuple
    inc_sec: tuple
    bw_base: int
    split_c: bool = False
    classifier_1k: str = field(default="fc6")

    def __post_init__(self):
        object.__setattr__(self, "k_sec", tuple(self.k_sec))
        object.__setattr__(self, "inc_sec", tuple(self.inc_sec))
        if len(self.k_sec) != len(self.inc_sec) or not self.k_sec:
            raise ValueError("k_sec and inc_sec need one entry per stage, got %r and %r" % (self.k_sec, self.inc_sec))
        if self.stem_kernel not in (3, 7):
            raise ValueError("stem_kernel must be 3 or 7, got %r" % self.stem_kernel)
        for name in ("stem_filters", "k_r", "groups", "bw_base"):
            if getattr(self, name) <= 0:
                raise ValueError("%s must be positive, got %r" % (name, getattr(self, name)))
        if min(self.k_sec) <= 0 or min(self.inc_sec) <= 0:
            raise ValueError("k_sec and inc_sec entries must be positive")
        if self.k_r % self.groups:
            raise ValueError("k_r (%d) must be a multiple of groups (%d)" % (self.k_r, self.groups))

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Variant:
    """One of the authors' networks: its configuration and its per-GPU batch in their speed table (README), the
    training default. timm's DPN models carry the same names (tools/dev/timm_reference.py)."""

    config: DPNConfig
    batch_size: int


# The per-variant facts, one row each: the authors' settings/symbol_dpn-*.py (SPEC section 1.1) and batch sizes.
# Every other list of variants (command-line names and help, default batches, timm's models) derives from it.
VARIANT_TABLE = {
    "dpn68": Variant(DPNConfig(10, 3, 128, 32, (3, 4, 12, 3), (16, 32, 32, 64), 64), 64),
    "dpn68b": Variant(DPNConfig(10, 3, 128, 32, (3, 4, 12, 3), (16, 32, 32, 64), 64, split_c=True,
                                classifier_1k="fc6-1k"), 64),
    "dpn92": Variant(DPNConfig(64, 7, 96, 32, (3, 4, 20, 3), (16, 32, 24, 128), 256), 32),
    "dpn98": Variant(DPNConfig(96, 7, 160, 40, (3, 6, 20, 3), (16, 32, 32, 128), 256), 32),
    "dpn107": Variant(DPNConfig(128, 7, 200, 50, (4, 8, 20, 3), (20, 64, 64, 128), 256), 24),
    "dpn131": Variant(DPNConfig(128, 7, 160, 40, (4, 8, 28, 3), (16, 32, 32, 128), 256), 24),
}
VARIANTS = {name: variant.config for name, variant in VARIANT_TABLE.items()}
DEFAULT_BATCH = {name: variant.batch_size for name, variant in VARIANT_TABLE.items()}


def resolve(network):
    """A DPNConfig from a variant name or a JSON object of DPNConfig fields (a custom DPN)."""
    if isinstance(network, DPNConfig):
        return network
    if network in VARIANTS:
        return VARIANTS[network]
    if isinstance(network, str) and network.lstrip().startswith("{"):
        try:
            return DPNConfig(**json.loads(network))
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError("bad custom DPN configuration %s: %s" % (network, err)) from None
    raise ValueError("unknown model %r: choose one of %s, or give a JSON DPN configuration"
                     % (network, ", ".join(VARIANTS)))


def default_classifier(cfg, num_classes):
    """The classifier name the authors' symbol uses: ``fc6-1k`` only for DPN-68b with 1000 classes."""
    return cfg.classifier_1k if num_classes == 1000 else "fc6"
