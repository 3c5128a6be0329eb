"""From laptop to cluster, for real: cluster/local/start.sh starts a two-node Ray cluster on loopback
(head and worker node, 1 CPU and a custom resource each, token auth on) and an MLflow server;
`accelsweep submit` runs cluster/local/smoke.yaml on it; the test then reads the server: the job
succeeded, every trial has a child run with metrics and model files, trials ran on both nodes, and
`accelsweep report` shows them from the client side; a streamed parquet sweep run from this
machine trains 2-worker trials with one worker on each node, DDP's and periodic averaging's. stop.sh tears down exactly what
start.sh started. About 4 minutes on 2 cores."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
START, STOP = REPO / "cluster/local/start.sh", REPO / "cluster/local/stop.sh"
SMOKE = "cluster/local/smoke.yaml"
RAY_WORKER_PORTS = range(10002, 20000)  # Ray's default worker ports: the chosen ports must avoid them

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(sys.platform != "linux", reason="--distinct-ips needs Linux's 127.0.0.0/8 loopback"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="start.sh waits for its services with curl"),
]


def free_ports(count):
    sockets = []
    while len(sockets) < count:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        if probe.getsockname()[1] in RAY_WORKER_PORTS:
            probe.close()
            continue
        sockets.append(probe)
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def accelsweep(*args, env, timeout=60):
    return subprocess.run(["accelsweep", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running local cluster: its Jobs API URL, MLflow URI and the client environment with its token."""
    state = tmp_path_factory.mktemp("local-cluster")
    ray_temp = tempfile.mkdtemp(prefix="acs-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    gcs, dashboard, client, mlflow_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["RAY_AUTH_TOKEN_PATH"] = str(state / "auth_token")  # start.sh makes the token; the client reads it
    try:
        subprocess.run(
            [START, "--state-dir", state, "--ray-temp-dir", ray_temp, "--workers", "1", "--distinct-ips",
             "--gcs-port", str(gcs), "--dashboard-port", str(dashboard), "--client-port", str(client),
             "--mlflow-port", str(mlflow_port)],
            env=env, check=True, timeout=240,
        )
        yield {
            "address": f"http://127.0.0.1:{dashboard}",
            "gcs": f"127.0.0.1:{gcs}",
            "mlflow": f"http://127.0.0.1:{mlflow_port}",
            "env": env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"},
            "state": state,
        }
    finally:
        subprocess.run([STOP, "--state-dir", state], env=env, timeout=120)
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_start_records_every_process_and_turns_token_auth_on(cluster):
    names = [line.split()[0] for line in (cluster["state"] / "pids").read_text().splitlines()]
    assert names == ["ray-head", "ray-worker-1", "mlflow"]
    assert len((cluster["state"] / "auth_token").read_text()) == 64
    env_file = (cluster["state"] / "env").read_text()
    assert f"RAY_API_SERVER_ADDRESS={cluster['address']}" in env_file
    assert f"MLFLOW_TRACKING_URI={cluster['mlflow']}" in env_file


def test_submitted_sweep_runs_on_both_nodes_and_lands_in_mlflow(cluster):
    submitted = accelsweep("submit", SMOKE, "--address", cluster["address"], env=cluster["env"], timeout=300)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    job_id = submitted.stdout.splitlines()[0]
    status = accelsweep("jobs", "status", job_id, "--address", cluster["address"], env=cluster["env"])
    assert status.stdout.startswith(f"{job_id}: SUCCEEDED"), status.stdout + status.stderr

    client = MlflowClient(cluster["mlflow"])
    experiment = client.get_experiment_by_name("cluster-smoke")
    (sweep,) = client.search_runs([experiment.experiment_id], "tags.`accelsweep.kind` = 'sweep'")
    trials = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    assert len(trials) == 4  # the baseline and 3 samples
    for trial in trials:
        assert {"val_accuracy", "test_accuracy", "latency_ms", "size_bytes"} <= set(trial.data.metrics), trial.info.run_name
        assert {a.path for a in client.list_artifacts(trial.info.run_id, "model")} >= {"model/model.onnx"}
    nodes = {trial.data.tags["accelsweep.node_ip"] for trial in trials}
    assert len(nodes) == 2, f"every trial ran on one node: {nodes}"

    report = accelsweep("report", "cluster-smoke", "--uri", cluster["mlflow"], env=cluster["env"])
    assert report.returncode == 0, report.stderr
    for trial in trials:
        assert trial.data.tags["accelsweep.trial_id"] in report.stdout


STREAMED_SPEC = """\
name: cluster-streamed
data: {{source: parquet, path: {path}, label_column: label}}
model: {{kind: mlp, hidden: [32]}}
train: {{epochs: 1, batch_size: 64, seed: 0}}
space: {{workers: {{grid: [2]}}, sync_every: {{grid: [1, 4]}}}}
search: {{algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 1}}
tracking: {{experiment: cluster-streamed}}
deploy: {{rounds: 3}}
"""


def test_a_streamed_parquet_sweep_reads_its_data_on_both_nodes_and_averages_across_them(cluster, tmp_path):
    # `accelsweep run` on this machine joins the cluster (RAY_ADDRESS, as start.sh's env file says);
    # each node has 1 CPU, so a 2-worker trial's workers (1 CPU each) run one per node, each
    # reading its own shard of the parquet file, which both nodes see on this machine's disk; one
    # all-reduces gradients every step (DDP), one averages parameters every 4 steps (sync_every)
    from tests.orchestrator.streamed_files import write_digits_parquet

    write_digits_parquet(tmp_path / "digits.parquet", list_column=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(STREAMED_SPEC.format(path=tmp_path / "digits.parquet"))
    env = cluster["env"] | {"RAY_ADDRESS": cluster["gcs"], "RAY_AUTH_MODE": "token"}
    run = subprocess.run(["accelsweep", "run", str(spec)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    client = MlflowClient(cluster["mlflow"])
    experiment = client.get_experiment_by_name("cluster-streamed")
    (sweep,) = client.search_runs([experiment.experiment_id], "tags.`accelsweep.kind` = 'sweep'")
    trials = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    assert len(trials) == 3  # the baseline, sync_every 1 and 4
    for trial in trials:
        assert 0.3 < trial.data.metrics["test_accuracy"] <= 1 and trial.data.metrics["train_samples_per_s"] > 0
    every_step, every_4 = sorted((t.data.metrics for t in trials if t.data.metrics.get("world_size", 1) == 2), key=lambda m: -m["sync_rounds"])
    for metrics in (every_step, every_4):
        assert metrics["world_size"] == 2 and metrics["ddp_ranks_trained"] == 2
        assert metrics["ddp_replica_checksum_spread"] == 0  # own shards, averaged gradients or parameters
    assert every_step["sync_rounds"] == every_step["optimizer_steps"] > 0
    assert every_4["sync_rounds"] == math.ceil(every_4["optimizer_steps"] / 4)
    assert _cpus_of_alive_nodes(env) == [1.0, 1.0]  # two ranks of 1 CPU each: one on each node


def _cpus_of_alive_nodes(env):
    listed = subprocess.run(
        [sys.executable, "-c", "import json, ray; ray.init(); print(json.dumps([n['Resources'].get('CPU') for n in ray.nodes() if n['Alive']]))"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(listed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "token_env, advice",
    [({"RAY_AUTH_TOKEN": "0" * 64}, "refused the auth token from RAY_AUTH_TOKEN"), ({"RAY_AUTH_TOKEN_PATH": "/nonexistent"}, "needs its auth token")],
    ids=["wrong-token", "no-token"],
)
def test_a_missing_or_wrong_token_is_a_clear_error(cluster, tmp_path, token_env, advice):
    env = cluster["env"] | {"HOME": str(tmp_path)} | token_env
    result = accelsweep("jobs", "list", "--address", cluster["address"], env=env)
    assert result.returncode == 2
    assert advice in result.stderr and "ray get-auth-token" in result.stderr
    assert "Traceback" not in result.stderr
