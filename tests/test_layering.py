"""The seams hold: which modules import what, every import counted (function-level ones too)."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORCHESTRATOR_LAYERS = ("errors", "config", "tracking", "results", "sweep", "quiet", "deploy", "cluster", "cli", "__main__")
"""`orchestrator`'s layers, lowest first: a module imports only from its own layer or lower ones.
`results` sits below `sweep` because it reads MLflow alone (no torch, no Ray) and the search
reports the same training figures the report computes."""
MAX_TOP_MODULES = 6
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PROJECT = {module_name(path): path for root in ("orchestrator", "trainers") for path in (REPO / root).rglob("*.py")}


def imported_modules(path):
    """Every name an import statement in `path` names, anywhere in the file."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def project_imports(path):
    """The project modules `path` imports: `from package import module` counts as the module."""
    found = set()
    for name in imported_modules(path):
        while name and name not in PROJECT:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    me = module_name(path)
    return {name for name in found if name != me and not me.startswith(name + ".")}  # a package's own __init__


GRAPH = {name: project_imports(path) for name, path in PROJECT.items()}


def layer_of(module):
    parts = module.split(".")
    return ORCHESTRATOR_LAYERS.index(parts[1]) if len(parts) > 1 else -1


def test_no_import_cycle_among_the_project_modules():
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_orchestrator_imports_one_way_down_its_layers():
    wrong = []
    for module, targets in GRAPH.items():
        if not module.startswith("orchestrator."):
            continue
        for target in targets:
            if target.startswith("orchestrator.") and layer_of(target) > layer_of(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_trainers_import_nothing_of_the_orchestrator():
    wrong = [f"{module} imports {target}" for module, targets in GRAPH.items() if module.startswith("trainers")
             for target in targets if target.startswith("orchestrator")]
    assert not wrong, wrong


def test_every_orchestrator_module_is_in_a_layer():
    for module in GRAPH:
        if module.startswith("orchestrator."):
            assert module.split(".")[1] in ORCHESTRATOR_LAYERS, f"{module}: not in ORCHESTRATOR_LAYERS"


def test_few_modules_at_the_top_of_the_orchestrator():
    top = sorted(path.name for path in (REPO / "orchestrator").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def _docstring_lines(function):
    first = function.body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    return first.end_lineno - first.lineno + 1 if is_docstring else 0


def test_modules_and_functions_stay_short():
    """No module over MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES lines of code (its docstring aside)."""
    too_long = []
    for path in (REPO / "orchestrator").rglob("*.py"):
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}: {node.name} is {length} lines")
    assert not too_long, "\n".join(too_long)


def test_loop_and_measure_name_no_technique_module():
    technique_modules = {f"trainers.techniques.{path.stem}" for path in (REPO / "trainers" / "techniques").glob("*.py")}
    technique_modules -= {"trainers.techniques.__init__", "trainers.techniques.common"}
    for module in ("loop", "measure"):
        imported = imported_modules(REPO / "trainers" / f"{module}.py")
        assert not imported & technique_modules, f"trainers/{module}.py imports {imported & technique_modules}"


def test_trainers_import_neither_ray_nor_mlflow():
    for path in (REPO / "trainers").rglob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        assert not roots & {"ray", "mlflow"}, path


def test_the_results_layer_loads_neither_torch_nor_ray():
    """What `accelsweep report` builds and renders its results with stays light."""
    modules = sorted(name for name in PROJECT if name.startswith("orchestrator.results."))
    probe = f"import sys; import {', '.join(modules)}; print(sorted({{'torch', 'ray'}} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_the_command_line_loads_nothing_heavy_until_a_command_runs():
    """`accelsweep --help` and a spec error answer at once: the parser imports neither torch, Ray nor MLflow."""
    probe = "import sys, orchestrator.cli; print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_a_worker_that_only_trains_loads_no_deployment_runtime():
    """A worker-group trial's workers import the trial driver and train; the runtimes (ONNX and
    its ml_dtypes, Inductor) load where a model is exported, on first use, and Ray Train's
    controller, which unpickles the run's callbacks, imports neither torch nor the trainers."""
    probe = (
        "import sys, orchestrator.sweep.trial_driver; heavy = {'onnx', 'onnxruntime'} & set(sys.modules)\n"
        "from trainers.runtimes import export_to; print(sorted(heavy), 'onnx' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[] False"
    probe = "import sys, orchestrator.sweep.epoch_reports; print(sorted({'torch', 'trainers.loop'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
