"""Input feature selection: keep only the highest-variance input features, so the first layer shrinks.

Variance is measured on the training split only, so the validation and test splits never influence
which features are kept.
"""

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from trainers.data import Dataset
from trainers.techniques import Technique, register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSelect:
    """Keep the fraction ``keep`` of input features with the largest training-split variance."""

    key: ClassVar[str] = "feature_keep"
    keep: float = 1.0

    def __post_init__(self):
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
            raise ValueError(f"{self.key}={self.keep!r} must be a number in (0, 1]")

    @property
    def active(self) -> bool:
        """Whether any feature is dropped."""
        return self.keep < 1

    def mode(self) -> str:
        """Short recipe tag such as "fk0.5"; "" when inactive."""
        return f"fk{self.keep:g}" if self.active else ""


def apply_feature_selection(ds: Dataset, cfg: FeatureSelect) -> tuple[Dataset, torch.Tensor]:
    """Keep the top-k flattened input features by training-split variance, k = max(1, round(keep * n)).

    Ties in variance keep the lower feature index.

    Args:
        ds: the data set; its inputs may have any shape and are flattened.
        cfg: the FeatureSelect config.

    Returns:
        A new Dataset whose x_train, x_val and x_test are (N, k), and the kept feature indices
        (sorted, int64, into the flattened inputs). When ``cfg`` is inactive, ``ds`` itself and
        all indices.

    Example:
        >>> selected, kept = apply_feature_selection(ds, FeatureSelect(keep=0.5))
        >>> selected.input_shape == (len(kept),)
        True
    """
    n_features = math.prod(ds.input_shape)
    if not cfg.active:
        return ds, torch.arange(n_features)
    k = max(1, round(cfg.keep * n_features))
    variance = _flatten(ds.x_train).var(dim=0, correction=0)
    kept = torch.argsort(variance, descending=True, stable=True)[:k].sort().values
    logger.info("feature selection keeps %d of %d input features (%s)", k, n_features, cfg.mode())
    selected = dataclasses.replace(
        ds,
        x_train=_flatten(ds.x_train)[:, kept],
        x_val=_flatten(ds.x_val)[:, kept],
        x_test=_flatten(ds.x_test)[:, kept],
    )
    return selected, kept


def _flatten(x):
    return x.reshape(len(x), -1)


def _select(data, cfg):
    selected, _ = apply_feature_selection(data, cfg)
    return selected, {}


TECHNIQUE = register(Technique(config=FeatureSelect, position=70, data=_select))
