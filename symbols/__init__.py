"""DPN graph builders: the authors' six variants and custom configurations, in any arrangement."""
from .arrangement import ARRANGEMENTS, AUTHORS, CPU, CPU_LEAN, Arrangement
from .config import DEFAULT_BATCH, VARIANTS, DPNConfig, default_classifier, resolve
from .dpn import (check_image_size, check_num_classes, feature_channels, feature_size, features, get_symbol,
                  logits, min_image_size)
from .gluon import dpn_block
from .meanmax import min_test_size, score_logits, score_symbol
from .precompute import precompute_weights

__all__ = ["ARRANGEMENTS", "AUTHORS", "CPU", "CPU_LEAN", "Arrangement", "DEFAULT_BATCH", "VARIANTS", "DPNConfig",
           "default_classifier", "resolve", "check_image_size", "check_num_classes", "feature_channels",
           "feature_size", "features", "get_symbol", "logits", "min_image_size", "min_test_size", "score_logits",
           "score_symbol", "precompute_weights", "dpn_block"]
