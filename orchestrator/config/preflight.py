"""The pre-flight: load a spec's data and build its model once, so that a bad file, label or model
factory fails before Ray starts.
"""

from orchestrator.config.schema import Spec, SpecError


def load_data(spec: Spec, spec_path: str):
    """Load the spec's data set and build its baseline model once, so that a bad file, label or
    model factory fails before Ray starts.

    Args:
        spec: the validated spec.
        spec_path: the spec's file, named in messages.

    Returns:
        The loaded data set (a trainers.data.Dataset).

    Raises:
        SpecError: the data or the model cannot be loaded; the message names the spec file,
            the key and the cause.

    Example:
        >>> data = load_data(load_spec("search_spaces/quickstart.yaml"), "quickstart.yaml")  # doctest: +SKIP
    """
    from trainers.data import DataError, load_dataset  # torch and sklearn: only when data is needed

    fields = spec.data.model_dump(exclude={"source", "path"})
    try:
        data = load_dataset(spec.data.source, spec.data.path, seed=spec.train.seed, **fields)
    except DataError as error:
        raise SpecError(f"{spec_path}: data: {error}") from None
    from trainers.models import ModelError, build_model

    try:
        build_model(
            spec.model.kind,
            data.input_shape,
            data.num_classes,
            hidden=spec.model.hidden,
            channels=spec.model.channels,
            options=spec.model.options,
        )
    except ModelError as error:
        raise SpecError(f"{spec_path}: {error.key}: {error}") from None
    return data
