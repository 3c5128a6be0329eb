"""The seams hold: which modules import what."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


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


def test_the_report_loads_neither_torch_nor_ray():
    probe = "import sys, orchestrator.report; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
