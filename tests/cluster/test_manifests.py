"""The cluster recipes in cluster/ stay runnable: every YAML file parses; Ray manifests use the
project's Ray version with matching image tags, token auth, GPU workers and a loopback-only
dashboard where Ray's own config sets it; every `accelsweep ...` / `python -m orchestrator ...`
command they name is a real sub-command on a spec that exists and validates; and the pip lists
they install are the project's own dependencies."""

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from packaging.requirements import Requirement

from orchestrator.cli import jobs, parser, submit
from orchestrator.cluster.jobs_client import build_runtime_env
from orchestrator.config.loading import load_spec

REPO = Path(__file__).resolve().parents[2]
CLUSTER_FILES = sorted((REPO / "cluster").rglob("*.yaml"))
COMMAND = re.compile(r"(?:accelsweep|python -m orchestrator)\s+(\w+)\s+(\S+\.yaml)")
PROJECT_RAY = next(
    Requirement(dep) for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    if Requirement(dep).name == "ray"
)
RAY_IMAGE = re.compile(r"rayproject/ray:(\S+)")


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def ray_manifests():
    """(file, Ray-version owner, whole document) for each RayCluster, RayJob and autoscaler config."""
    found = []
    for path in CLUSTER_FILES:
        for doc in documents(path):
            if doc.get("kind") == "RayCluster":
                found.append((path, doc["spec"], doc))
            elif doc.get("kind") == "RayJob":
                found.append((path, doc["spec"]["rayClusterSpec"], doc))
            elif "available_node_types" in doc:
                found.append((path, None, doc))
    return found


def images(tree):
    if isinstance(tree, dict):
        return [image for key, value in tree.items() for image in ([value] if key == "image" else images(value))]
    if isinstance(tree, list):
        return [image for value in tree for image in images(value)]
    return []


def sub_commands():
    commands = argparse.ArgumentParser().add_subparsers()
    submit.register(commands)
    jobs.register(commands)
    cli = next(action for action in parser()._actions if isinstance(action, argparse._SubParsersAction))
    return set(cli.choices) | set(commands.choices)


def test_every_cluster_file_parses():
    assert {path.name for path in CLUSTER_FILES} >= {"aws.yaml", "raycluster.yaml", "rayjob.yaml", "shared.yaml", "smoke.yaml"}
    for path in CLUSTER_FILES:
        assert documents(path), f"{path} holds no YAML document"


def test_ray_versions_and_image_tags_match_the_project():
    manifests = ray_manifests()
    assert len(manifests) == 3  # raycluster.yaml, rayjob.yaml, aws.yaml
    assert ray.__version__ in PROJECT_RAY.specifier
    for path, owner, doc in manifests:
        version = owner["rayVersion"] if owner else ray.__version__
        assert version == ray.__version__, path
        tags = [RAY_IMAGE.match(image).group(1) for image in images(doc)]
        assert tags, f"{path} names no rayproject/ray image"
        for tag in tags:
            assert tag.startswith(f"{version}-"), (path, tag)


def test_kuberay_manifests_keep_token_auth_and_scale_gpu_workers():
    for path, cluster, _ in ray_manifests():
        if cluster is None:
            continue
        assert cluster["authOptions"]["mode"] == "token", path
        limits = [group["template"]["spec"]["containers"][0]["resources"]["limits"] for group in cluster["workerGroupSpecs"]]
        assert any(limit.get("nvidia.com/gpu", 0) >= 1 for limit in limits), path


def test_autoscaler_config_keeps_token_auth_and_a_loopback_dashboard():
    (config,) = [doc for _, owner, doc in ray_manifests() if owner is None]
    starts = [command for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in command]
    assert len(starts) == 2
    assert all("RAY_AUTH_MODE=token" in command for command in starts)
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert any(group.get("min_workers") == 0 and "g5" in group["node_config"]["InstanceType"] for group in config["available_node_types"].values())


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_commands_name_real_sub_commands_and_valid_specs(path):
    known = sub_commands()
    for command, spec in COMMAND.findall(path.read_text()):
        assert command in known, f"{path}: `{command}` is not an accelsweep command ({sorted(known)})"
        assert (REPO / spec).is_file(), f"{path}: {spec} does not exist"
        load_spec(REPO / spec)


def test_rayjob_entrypoint_runs_a_spec_of_the_project():
    (rayjob,) = [doc for _, owner, doc in ray_manifests() if doc.get("kind") == "RayJob"]
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:4] == ["python", "-m", "orchestrator", "run"]
    load_spec(REPO / words[4])


def test_installed_packages_are_the_projects_dependencies():
    project = build_runtime_env("http://mlflow:5000", pip=True)["pip"]
    (rayjob,) = [doc for _, owner, doc in ray_manifests() if doc.get("kind") == "RayJob"]
    assert yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["pip"] == project
    (config,) = [doc for _, owner, doc in ray_manifests() if owner is None]
    (install,) = config["setup_commands"]
    assert shlex.split(install)[2:] == project


def test_recipes_name_the_commands_that_run_them():
    named = {command for path in CLUSTER_FILES for command, _ in COMMAND.findall(path.read_text())}
    assert {"submit", "run"} <= named
