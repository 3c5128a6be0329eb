"""Trial checkpoint files: written atomically, read back safely (tensors and plain values only).

The trial drivers write them, and `rebuild_deployable` (the registry's way back to a trial's
model) reads them, through `save_atomically` and `load_trained`; a teacher and a trial's start
weights are another trial's `trained.pt`, loaded into a model with `load_trained_weights`.
"""

import os

import torch
from torch import nn

TRAINED_FILE = "trained.pt"
"""A trial's training state: {"epoch": int, "model": state_dict, "optimizer": state_dict, "metrics":
the last epoch's figures} (checkpoints written before the metrics were kept lack them)."""
DEPLOYABLE_FILE = "deployable.pt"
"""The state_dict of a finished trial's eager deployable model."""


class CheckpointError(Exception):
    """A trial's checkpoint cannot be read back."""


def save_atomically(state: object, path: str) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: never a half-written file.

    Args:
        state: what to save (tensors, dicts of tensors, numbers).
        path: the final file.

    Example:
        >>> import tempfile
        >>> save_atomically({"w": torch.zeros(2)}, os.path.join(tempfile.mkdtemp(), "x.pt"))
    """
    partial = f"{path}.partial"
    torch.save(state, partial)
    os.replace(partial, path)


def load_trained(path: str) -> dict:
    """Read a trial's `trained.pt` checkpoint safely (`weights_only`: tensors and plain values only).

    Args:
        path: the checkpoint file.

    Returns:
        {"epoch": int, "model": state_dict, "optimizer": state_dict, and "metrics" where the trial
        kept them}, tensors on the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt or holds more than weights; the
            message names the file (not a traceback from deep inside pickle).

    Example:
        >>> load_trained("accelsweep_results/quickstart-.../checkpoint_000004/trained.pt")["epoch"]  # doctest: +SKIP
        5
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises pickle, zip, EOF and OS errors alike
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer"} <= set(state):
        raise CheckpointError(f"checkpoint {path} is not a trial checkpoint (expected epoch, model, optimizer)")
    return state


def load_trained_weights(module: nn.Module, path: str, role: str) -> int:
    """Load the model weights of a trial's `trained.pt` into `module`, read with the checked reader.

    Args:
        module: a module of the checkpoint's architecture (its shapes and names).
        path: the checkpoint file.
        role: what the weights are for, named in the message (e.g. "teacher", "start weights").

    Returns:
        The number of epochs the checkpoint's trial had trained.

    Raises:
        CheckpointError: the file is missing, corrupt or not a trial checkpoint.
        ValueError: the weights do not fit `module`; the message is one line naming `role`, the
            file and the first mismatch.

    Example:
        >>> load_trained_weights(model, "baseline/checkpoint_000004/trained.pt", "teacher")  # doctest: +SKIP
        5
    """
    trained = load_trained(path)
    try:
        module.load_state_dict(trained["model"])
    except RuntimeError as error:
        first_mismatch = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        raise ValueError(
            f"{role} {path} does not fit this trial's model (is it of the same model kind, with the same inputs? "
            f"feature selection changes them): {first_mismatch}"
        ) from None
    return trained["epoch"]
