"""Every docstring example in the packages named here runs, as `pytest --doctest-modules` would
run it: an example that needs Ray, a cluster, a tracking store, a data file or checkpoint, a GPU, or
more than a second of training or compiling says `# doctest: +SKIP`.

The examples run from the repository root (they name files such as
search_spaces/quickstart.yaml). To cover another package, add it to DOCTESTED.
"""

import doctest
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCTESTED = ("orchestrator", "trainers")
"""The packages whose docstring examples run."""


def _modules():
    for package in DOCTESTED:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name != "__main__.py":
                parts = path.relative_to(REPO).with_suffix("").parts
                yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("module_name", list(_modules()))
def test_docstring_examples_run(module_name, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples in {module_name} failed (output above)"
