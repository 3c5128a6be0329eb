"""Input feature selection: keep only the highest-variance input features, so the first layer shrinks.

Variance is measured on the training split only, so the validation and test splits never influence
which features are kept. The kept indices become one more of the data set's input transforms, so
the deployable selects them itself from the raw rows it is given.
"""

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

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

    def label(self) -> str:
        """Short recipe tag such as "fk0.5"; "" when inactive."""
        return f"fk{self.keep:g}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> FeatureSelect(0.5).describe()
            'keeps 50% of the input features (highest variance)'
        """
        return f"keeps {self.keep:.0%} of the input features (highest variance)" if self.active else ""


class SelectFeatures(nn.Module):
    """Flatten each example and keep the features at `kept` (an ONNX `Gather` once exported).

    Args:
        kept: indices into the flattened features, int64.

    Example:
        >>> SelectFeatures(torch.tensor([0, 2]))(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
        tensor([[1., 3.]])
    """

    def __init__(self, kept: torch.Tensor):
        super().__init__()
        self.register_buffer("kept", kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).index_select(1, self.kept)


def apply_feature_selection(ds: Dataset, cfg: FeatureSelect) -> tuple[Dataset, torch.Tensor]:
    """Keep the top-k flattened model input features by training-split variance, k = max(1, round(keep * n)).

    Variance is that of the model's inputs (the raw rows through the data set's transforms so far);
    ties keep the lower feature index.

    Args:
        ds: the data set; its model inputs may have any shape and are flattened.
        cfg: the FeatureSelect config.

    Returns:
        The data set read through one more transform, `SelectFeatures(kept)` (its model inputs are
        (N, k); its raw rows are unchanged), and the kept feature indices (sorted, int64, into the
        flattened model inputs). When ``cfg`` is inactive, ``ds`` itself and all indices.

    Example:
        >>> from trainers.data import load_dataset
        >>> selected, kept = apply_feature_selection(load_dataset("digits"), FeatureSelect(keep=0.5))
        >>> selected.model_input_shape == (len(kept),)
        True
    """
    n_features = math.prod(ds.model_input_shape)
    if not cfg.active:
        return ds, torch.arange(n_features)
    k = max(1, round(cfg.keep * n_features))
    variance = ds.train_input_variance()
    kept = torch.argsort(variance, descending=True, stable=True)[:k].sort().values
    logger.info("feature selection keeps %d of %d input features (%s)", k, n_features, cfg.label())
    return ds.with_transform(SelectFeatures(kept)), kept


def _select(data, cfg):
    selected, _ = apply_feature_selection(data, cfg)
    return selected, {}


TECHNIQUE = register(Technique(config=FeatureSelect, position=70, data=_select))
