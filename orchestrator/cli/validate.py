"""`accelsweep validate SPEC`: check the spec, its data and its model without running anything."""

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add `validate` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    validate = commands.add_parser(
        "validate",
        help="check a spec, its data and its model without running anything",
        description="Check SPEC's keys and values, load its data and build its model. Exits 0 if valid, 2 if not.",
    )
    validate.add_argument("spec", help="the sweep spec (YAML)")
    validate.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Print one line saying the spec is valid, with its trials and data; a bad spec raises `SpecError`.

    Example:
        >>> main(argparse.Namespace(spec="search_spaces/quickstart.yaml"))  # doctest: +ELLIPSIS
        search_spaces/quickstart.yaml: valid; 9 trials of mlp on digits (...)
        0
    """
    from orchestrator.config.loading import load_spec
    from orchestrator.config.preflight import load_data

    spec = load_spec(args.spec)  # YAML and schema first: answered before torch and Ray load
    data = load_data(spec, args.spec)
    from orchestrator.sweep.search import planned_trials
    from trainers.data import data_summary

    summary = data_summary(data)
    estimated = getattr(data, "counted_at_start", False)  # a csv directory's rows: counted when the sweep starts
    classes = f"at least {summary['num_classes']}" if estimated and not data.classes_from_spec else summary["num_classes"]
    print(
        f"{args.spec}: valid; {planned_trials(spec)} trials of {spec.model.kind} on {summary['name']} "
        f"({'about ' * estimated}{summary['n_train']} train / {summary['n_val']} val / {summary['n_test']} test, "
        f"input {summary['input_shape']}, {classes} classes)"
    )
    return 0
