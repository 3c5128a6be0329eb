"""The acceleration techniques, registered by the spec's `space` key.

Each technique is a frozen config dataclass (its first field is the swept value, `key` names the
spec key, `active` says whether it does anything, `mode()` gives its short recipe string) plus the
functions that apply it, in its own module.
"""

from dataclasses import fields

from trainers.techniques.compile import Compile
from trainers.techniques.dropout import Dropout
from trainers.techniques.feature_select import FeatureSelect
from trainers.techniques.l1 import L1
from trainers.techniques.lowrank import LowRank
from trainers.techniques.precision import Precision
from trainers.techniques.prune import Prune
from trainers.techniques.quantize import Quantize
from trainers.techniques.weight_decay import WeightDecay

TECHNIQUES = {
    cls.key: cls
    for cls in (LowRank, Quantize, Prune, Dropout, WeightDecay, L1, FeatureSelect, Precision, Compile)
}


def techniques_from_choices(choices: dict) -> dict[str, object]:
    """Build every technique's config from one trial's sampled values.

    Args:
        choices: the trial's values by spec key, e.g. {"rank": 16, "quant_bits": 8}. Keys that are
            not techniques (such as "workers") are ignored; techniques not named get their
            default, inactive config.

    Returns:
        The configs by key, one for every registered technique, in registry order.

    Example:
        >>> techniques_from_choices({"rank": 16})["rank"]
        LowRank(rank=16)
    """
    return {
        key: cls(choices[key]) if key in choices else cls() for key, cls in TECHNIQUES.items()
    }


def off_value(key: str) -> object:
    """The value of a technique's spec key that turns it off (the dense fp32 baseline's value).

    Example:
        >>> off_value("rank"), off_value("quant_bits")
        (None, 32)
    """
    return fields(TECHNIQUES[key])[0].default


def mode_string(configs: dict[str, object]) -> str:
    """The trial's recipe at a glance: the active techniques' mode strings joined by "-".

    Args:
        configs: technique configs by key, as `techniques_from_choices` returns them.

    Returns:
        e.g. "r16-q8-d0.1-wd1e-4", or "baseline" when no technique is active.

    Example:
        >>> mode_string(techniques_from_choices({"rank": 16, "quant_bits": 8}))
        'r16-q8'
    """
    modes = [cfg.mode() for cfg in configs.values() if cfg.active]
    return "-".join(modes) or "baseline"
