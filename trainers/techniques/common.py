"""Shared helpers of the technique modules: label numbers, value checks, baking weight transforms."""

import logging
import math

import numpy as np
from torch import nn
from torch.nn.utils import parametrize

logger = logging.getLogger(__name__)


def format_number(value: float) -> str:
    """Render a number as briefly as possible for a label.

    Rounds to three significant digits (a label is read at a glance; the exact value is in the
    trial's params), then picks the shorter of plain decimal and scientific notation (ties go to
    decimal), with no trailing zeros, no "+" and no zero-padded exponent.

    Args:
        value: the number to render.

    Returns:
        The short text, e.g. "1e-4", "0.1", "16", "3e-3".

    Example:
        >>> format_number(1e-4), format_number(0.1), format_number(16), format_number(6.4470e-5)
        ('1e-4', '0.1', '16', '6.45e-5')
    """
    value = float(f"{value:.3g}")
    decimal = np.format_float_positional(value, trim="-")
    scientific = np.format_float_scientific(value, trim="-", exp_digits=1).replace("+", "")
    return scientific if len(scientific) < len(decimal) else decimal


def check_number(
    field: str, value: object, low: float, high: float = math.inf, *, include_high: bool = True
) -> None:
    """Raise ValueError unless `value` is a real number (not a bool) with low <= value <= high.

    Args:
        field: the name shown in the message, e.g. "Dropout.dropout".
        value: the value to check.
        low: the smallest allowed value (inclusive).
        high: the largest allowed value.
        include_high: whether `high` itself is allowed.

    Returns:
        None.

    Example:
        >>> check_number("Dropout.dropout", 0.1, 0.0, 1.0, include_high=False)
    """
    is_real = isinstance(value, (int, float)) and not isinstance(value, bool)
    below_high = is_real and (value <= high if include_high else value < high)
    if not (is_real and value >= low and below_high):
        bounds = f">= {low}" if high == math.inf else f">= {low} and {'<=' if include_high else '<'} {high}"
        raise ValueError(f"{field} must be a number {bounds}, got {value!r}")


def bake_weight_transforms(model: nn.Module) -> nn.Module:
    """Fold every parametrization (pruning mask, fake quantisation) into its plain tensor, in place.

    After this the model has ordinary parameters holding the transformed values, ready for
    export (`export_sparse`, real quantised kernels) and for measuring. Safe on a deep copy: the
    model it was copied from keeps its parametrizations and keeps working.

    Args:
        model: a model whose modules may carry `torch.nn.utils.parametrize` parametrizations.

    Returns:
        The same model, now without parametrizations.

    Example:
        >>> from trainers.techniques.prune import Prune, apply_pruning, update_pruning
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> notes = apply_pruning(model, Prune(0.5, schedule="oneshot"))
        >>> update_pruning(model, Prune(0.5, schedule="oneshot"), epoch=0, epochs=1)
        0.5
        >>> weight = bake_weight_transforms(model)[0].weight
        >>> type(weight).__name__, int((weight == 0).sum())  # a plain Parameter, half of its 8 entries zero
        ('Parameter', 4)
    """
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                remove_parametrizations_alone(module, tensor_name, leave_parametrized=True)
                logger.debug("baked the parametrization of %s.%s", name, tensor_name)
    return model


def remove_parametrizations_alone(module: nn.Module, tensor_name: str, leave_parametrized: bool) -> None:
    """`parametrize.remove_parametrizations`, leaving deep copies of the module working.

    A deep copy shares the module's generated Parametrized* class, and removing a parametrization
    deletes a property from that class: the module gets its own class first, so removing it here
    leaves the original (and other copies) as they were.

    Args:
        module: a module with a parametrization on `tensor_name`.
        tensor_name: the parametrized tensor, e.g. "weight".
        leave_parametrized: keep the transformed values (True) or the original tensor (False).

    Example:
        >>> import copy
        >>> layer = parametrize.register_parametrization(nn.Linear(4, 2), "weight", nn.Identity())
        >>> twin = copy.deepcopy(layer)
        >>> remove_parametrizations_alone(layer, "weight", leave_parametrized=False)
        >>> parametrize.is_parametrized(layer), parametrize.is_parametrized(twin)
        (False, True)
    """
    shared_class = type(module)
    module.__class__ = type(shared_class.__name__, shared_class.__bases__, dict(vars(shared_class)))
    parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=leave_parametrized)
