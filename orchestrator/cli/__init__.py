"""The `accelsweep` command: run, validate, report and look at acceleration sweeps.

One module per command, each a `register(commands)` adding its parser and a `main(args)` that
runs it; `main` here parses, sets up logging and the environment, and turns errors into exit codes.
"""

import argparse
import os
import re
import sys

from orchestrator.cli import bench, environment, jobs, report, resume, run, submit, ui, validate
from orchestrator.cli.sweep_workflow import UserInterrupt
from orchestrator.config.credentials import redact
from orchestrator.errors import UserError

COMMANDS = (run, resume, validate, report, bench, ui, submit, jobs)
"""The command modules, in the order `accelsweep --help` lists them."""
MAX_ERROR_LINE = 500
"""An `error:` line is cut to this many characters: values quoted in it are already cut shorter."""
MAX_ERROR_LINES = 20
"""A spec with more problems than this shows the first ones and a count of the rest."""
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # control characters, and what str.splitlines breaks at


def main(argv: list[str] | None = None) -> int:
    """Entry point of `accelsweep` (and `python -m orchestrator`).

    Args:
        argv: the arguments after the program name; defaults to sys.argv[1:].

    Returns:
        The exit code: 0 on success, 2 for a mistake in the input, 1 when a sweep fails.

    Example:
        >>> main(["validate", "search_spaces/quickstart.yaml"])  # sets up logging and the environment  # doctest: +SKIP
        search_spaces/quickstart.yaml: valid; 9 trials of mlp on digits (1258 train / 180 val / 359 test, ...)
        0
    """
    try:
        try:
            return _run(parser().parse_args(argv))
        finally:
            sys.stdout.flush()  # a closed stdout (`| head`) is met here, not in the interpreter's exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return 141  # 128 + SIGPIPE, what a command killed by the closed pipe would return


def _run(args):
    environment.configure(args.verbose)
    try:
        return args.command(args)
    except UserError as error:
        _print_error(str(error))
        return 2
    except UserInterrupt as interrupt:
        _print_error(str(interrupt))
        return interrupt.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    """The `accelsweep` argument parser, every command registered.

    Example:
        >>> parser().parse_args(["validate", "spec.yaml"]).spec
        'spec.yaml'
    """
    top = _OneLineErrors(
        prog="accelsweep",
        description=(
            "Find the best speed/accuracy trade-off of deep-learning acceleration techniques "
            "(low-rank, quantisation, pruning, dropout, weight decay, ...). One YAML spec -> "
            "Ray Tune trials -> Ray Train workers -> measured results in MLflow."
        ),
        epilog="Start with: accelsweep run search_spaces/quickstart.yaml",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="show Ray's, MLflow's and the trainers' own logs")
    commands = top.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return top


class _OneLineErrors(argparse.ArgumentParser):
    """Its sub-parsers are of its class: a bad argument to any command is one `error:` line."""

    def error(self, message):
        one_line = _LINE_BREAKS.sub(lambda match: repr(match.group())[1:-1], message)  # argparse quotes no values
        _print_error(f"{self.prog}: {one_line} (see {self.prog} --help)")
        sys.exit(2)


def _print_error(message):
    lines = redact(message).splitlines() or [""]
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[: MAX_ERROR_LINES - 1] + [f"... and {len(lines) - MAX_ERROR_LINES + 1} more problems"]
    for line in lines:
        text = f"error: {line}"
        print(text if len(text) <= MAX_ERROR_LINE else text[: MAX_ERROR_LINE - 3] + "...", file=sys.stderr)
