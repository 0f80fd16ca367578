"""DPN graph builders: the authors' six variants and custom configurations, in any arrangement.

The names that describe networks (configurations, arrangements) load at once; the graph builders load MXNet on
first use (PEP 562 ``__getattr__``), so that command lines can be parsed, and ``--help`` shown, without it."""
import importlib

from .arrangement import ARRANGEMENTS, AUTHORS, CPU, CPU_LEAN, Arrangement
from .config import DEFAULT_BATCH, VARIANT_TABLE, VARIANTS, DPNConfig, Variant, default_classifier, resolve

_BUILDERS = {".dpn": ("check_image_size", "check_num_classes", "feature_channels", "feature_size", "features",
                      "get_symbol", "logits", "min_image_size", "STEM_NAME", "final_name", "parameter_layers"),
             ".gluon": ("dpn_block",),
             ".meanmax": ("min_test_size", "score_logits", "score_symbol"),
             ".precompute": ("precompute_weights",)}
_MODULE_OF = {name: module for module, names in _BUILDERS.items() for name in names}

__all__ = ["ARRANGEMENTS", "AUTHORS", "CPU", "CPU_LEAN", "Arrangement", "DEFAULT_BATCH", "VARIANT_TABLE", "VARIANTS",
           "DPNConfig", "Variant", "default_classifier", "resolve", *_MODULE_OF]


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError("module 'symbols' has no attribute %r" % name)
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value
