"""Faults, with real processes: a training worker killed mid-trial, the driver stopped by Ctrl-C,
SIGTERM or SIGKILL and resumed, the results folder deleted or its disk filled mid-sweep, two
sweeps started together on a new store, a diverging trial, inputs that must fail before any
trial starts, and an MLflow tracking server that goes away mid-sweep and comes back.

Every sweep here runs `accelsweep` as a subprocess in its own session; its process tree is watched
(from /proc) so that the Ray processes it started, and only those, can be found and cleaned up.
Malformed data ends `run` before Ray or MLflow start: those cases run `main` in this process
(`accelsweep_in_process`); an unreachable Ray address is tests/orchestrator/cli/test_cli.py's.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.results import rows as results_rows
from orchestrator.sweep.baseline_weights import BASELINE_WEIGHTS_FILE
from orchestrator.tracking.tags import KIND_TAG, MODE_TAG, NOTE_TAG_PREFIX, PARENT_TAG, STATUS_TAG, TRIAL_ID_TAG
from tests.conftest import copy_of_new_mlflow_store
from tests.orchestrator.streamed_files import write_digits_csv
from trainers import metrics

FINAL_METRICS = ("test_accuracy", "latency_ms", "latency_p95_ms", "size_bytes", "param_count", "trial_seconds")
MODEL_FILES = {"model/trained.pt", "model/model.onnx"}
LEFTOVER_RESULTS = "accelsweep_results"


# ---------------------------------------------------------------- processes


def _proc_stat(pid):
    # (ppid, start time in clock ticks, state): the start time tells a pid from a later reuse of it
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def _process_table():
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))):
            table[int(entry)] = stat
    return table


def _descendants(root):
    table = _process_table()
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid, start_time):
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start_time and stat[2] != "Z"


TRAINING_METRICS = set(metrics.EPOCH_METRICS) | set(metrics.FINAL_METRICS) | {"trial_seconds"}
STALL_S = 300
"""How long a sweep may show no progress at all before a test gives up on it."""


class Accelsweep:
    """`python -m orchestrator ARGS` in the background, in its own session, its output in files.

    Every process seen below it is remembered (pid and start time), so the ones that outlive it
    (an orphaned local Ray) can be named and killed without touching anyone else's.
    """

    def __init__(self, args, cwd, env):
        self.cwd = cwd
        self.out_path = cwd / f"out-{time.monotonic_ns()}.txt"
        self.err_path = cwd / f"err-{time.monotonic_ns()}.txt"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.seen: dict[int, int] = {}

    def watch(self):
        if self.process.poll() is None:
            self.seen |= _descendants(self.process.pid)

    def progress(self):
        """Changes whenever the sweep does something: writes to its terminal or an MLflow store here."""
        stores = sorted((path.name, _mtime(path)) for path in self.cwd.glob("*.db*"))  # sqlite's journals come and go
        return self.err_path.stat().st_size, self.out_path.stat().st_size, stores

    def _stalled(self, last_progress, stall_s):
        progress = self.progress()
        if progress != last_progress[0]:
            last_progress[:] = [progress, time.monotonic()]
        return time.monotonic() - last_progress[1] > stall_s

    def wait_for(self, condition, what, stall_s=STALL_S):
        """Wait until `condition()`, however long the sweep takes, as long as it makes progress:
        fails when nothing changed for `stall_s` seconds (a loaded machine is slow, not stuck)."""
        last_progress = [self.progress(), time.monotonic()]
        while not self._stalled(last_progress, stall_s):
            self.watch()
            if condition():
                return
            exited = self.process.poll()
            assert exited is None, f"accelsweep exited {exited} before {what}:\n{self.stderr()[-3000:]}"
            time.sleep(0.25)
        pytest.fail(f"no {what}, and no progress for {stall_s}s:\n{self.stderr()[-3000:]}")

    def finish(self, stall_s=STALL_S):
        """Wait for the command to exit while it makes progress; returns its exit code."""
        last_progress = [self.progress(), time.monotonic()]
        while self.process.poll() is None and not self._stalled(last_progress, stall_s):
            self.watch()
            time.sleep(0.5)
        if self.process.poll() is None:
            pytest.fail(f"accelsweep still running, no progress for {stall_s}s:\n{self.stderr()[-3000:]}")
        return self.process.returncode

    def survivors(self):
        return {pid: _cmdline(pid)[:160] for pid, start in self.seen.items() if _alive(pid, start)}

    def stdout(self):
        return self.out_path.read_text()

    def stderr(self):
        return self.err_path.read_text()

    def kill_everything(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid, start in self.seen.items():
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_accelsweep(in_tmp_path):
    """Start `accelsweep ARGS` in the background in tmp_path; kills it and every Ray process it
    started when the test ends."""
    started = []

    def start(*args):
        started.append(Accelsweep(args, in_tmp_path, os.environ.copy()))
        return started[-1]

    yield start
    for sweep in started:
        sweep.kill_everything()


# ---------------------------------------------------------------- the MLflow store


def _query(db, sql, *args):
    # plain read-only sqlite reads while the driver writes; a store not created yet reads as empty
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def _mtime(path):
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _tune_state_saved_after(results_dir, moment):
    states = results_dir.glob("*/experiment_state*.json")
    return any(state.stat().st_mtime > moment for state in states)


def _wait_until(condition, timeout_s):
    # for processes to exit after their parent died: no sweep progress to watch, only the condition
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)


def _finished_trials(db):
    sql = (
        "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
        f"where t.key = '{KIND_TAG}' and t.value = 'trial' and r.status = 'FINISHED'"
    )
    return (_query(db, sql) or [(0,)])[0][0]


def _running_trials_at_epoch(db, epoch):
    sql = (
        "select r.run_uuid from runs r join metrics m on m.run_uuid = r.run_uuid "
        "where r.status = 'RUNNING' and m.key = 'val_accuracy' group by r.run_uuid having max(m.step) >= ?"
    )
    return [row[0] for row in _query(db, sql, epoch)]


def _max_epoch_logged(db):
    rows = _query(db, "select max(step) from metrics where key = 'val_accuracy'")
    return (rows[0][0] if rows else None) or 0


def _runs(client):
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000) if experiments else []
    parents = [run for run in runs if run.data.tags.get(KIND_TAG) == "sweep"]
    children = [run for run in runs if run.data.tags.get(KIND_TAG) == "trial"]
    return parents, children


def _steps(client, run_id, key="val_accuracy"):
    return [metric.step for metric in client.get_metric_history(run_id, key)]


def _assert_complete_trial(client, child, epochs, measured=True):
    assert child.info.status == "FINISHED", child.data.tags
    expected = FINAL_METRICS if measured else set(FINAL_METRICS) - {"latency_ms", "latency_p95_ms"}
    missing = [key for key in expected if key not in child.data.metrics]
    assert not missing, missing
    assert _steps(client, child.info.run_id) == list(range(1, epochs + 1))
    assert {artifact.path for artifact in client.list_artifacts(child.info.run_id, "model")} == MODEL_FILES


def _spec(name, **sections):
    spec = {"name": name, "data": {"source": "digits"}, "model": {"kind": "mlp", "hidden": [32]}}
    spec["train"] = {"epochs": 2, "batch_size": 64, "seed": 0}
    spec["deploy"] = {"runtimes": ["onnxruntime"], "rounds": 3}  # these tests are about faults, not timing
    return spec | sections


def _write(path, spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path.name


# ---------------------------------------------------------------- a training worker dies


SLOW_TRIAL = {
    "data": {"source": "synthetic", "n_samples": 20000, "n_features": 256},
    "model": {"kind": "mlp", "hidden": [256, 256]},
}


@pytest.mark.slow
def test_a_killed_worker_resumes_its_trial_from_the_last_checkpoint_in_the_same_run(start_accelsweep, in_tmp_path):
    epochs = 6
    spec = _spec("worker-death", **SLOW_TRIAL)  # nothing swept: one trial, the baseline
    spec["train"]["epochs"] = epochs
    copy_of_new_mlflow_store(in_tmp_path / "mlflow.db")
    sweep = start_accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    db = in_tmp_path / "mlflow.db"

    sweep.wait_for(lambda: _max_epoch_logged(db) >= 2, "epoch 2 in MLflow")
    trainers = [pid for pid in _descendants(sweep.process.pid) if _cmdline(pid).startswith("ray::ImplicitFunc")]
    assert len(trainers) == 1, {pid: _cmdline(pid) for pid in _descendants(sweep.process.pid)}
    os.kill(trainers[0], signal.SIGKILL)
    assert _max_epoch_logged(db) < epochs, "the trial ended before its worker was killed: make it slower"

    assert sweep.finish() == 0, sweep.stderr()[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == 1, [run.info.run_name for run in parents + children]
    child = children[0]
    _assert_complete_trial(client, child, epochs)
    assert child.data.metrics["resumed_from_epoch"] > 0, "the retry trained from scratch, not from its checkpoint"
    assert child.data.tags[STATUS_TAG] == "finished"


# ---------------------------------------------------------------- the driver is interrupted


INTERRUPTED_STUDENTS = (0.25, 0.5, 0.75)
"""The interrupted sweep's distill weights: the baseline and one student each, every student
pruned to half its channels."""
LINGERING_AFTER = {
    signal.SIGINT: set(),
    signal.SIGTERM: set(),
    signal.SIGKILL: {"ray::DashboardAgent", "ray::RuntimeEnvAgent"},
}
"""The Ray processes that may outlive a driver stopped by each signal. GCS, raylet and workers go
with the driver. After a SIGKILL, Ray's two agents outlive it: they notice the dead raylet, fail to
reach the dead GCS and exit about a minute later (seen: 62 s); the README says so."""


def _interrupted_spec():
    # the students start from the baseline's weights, pruned before their first epoch, and distil
    # from it: each resume must publish the baseline weights again (from the restored baseline)
    spec = _spec(
        "interrupted",
        **SLOW_TRIAL,
        space={"distill": {"grid": list(INTERRUPTED_STUDENTS)}, "channel_sparsity": 0.5},
        search={"algorithm": "grid", "num_samples": 1},
        resources={"cpus_per_worker": 2},  # one trial at a time on a 2-CPU machine: a student after its teacher
    )
    spec["train"] |= {"epochs": 24, "start_from": "baseline"}
    return spec


def _snapshot(client, children):
    # what training logged (the quiet measurement after the resumed sweep times every trial anew)
    return {
        child.info.run_id: {
            "start_time": child.info.start_time,
            "metrics": {key: value for key, value in child.data.metrics.items() if key in TRAINING_METRICS},
            "val_accuracy_entries": len(client.get_metric_history(child.info.run_id, "val_accuracy")),
            "test_accuracy_entries": len(client.get_metric_history(child.info.run_id, "test_accuracy")),
        }
        for child in children
    }


def _done_and_going(sweep, results_dir, finished=1):
    """Wait for `finished` trials done and the next part way, and for Tune's state (written every 2 s)
    saved after that; returns the MLflow client, the finished and the running child runs."""
    db = sweep.cwd / "mlflow.db"
    sweep.wait_for(
        lambda: _finished_trials(db) >= finished and _running_trials_at_epoch(db, 2),
        f"{finished} trial(s) done, the next at epoch 2",
    )
    seen_at = time.time()
    sweep.wait_for(lambda: _tune_state_saved_after(results_dir, seen_at), "Tune's state saved after that")
    client = MlflowClient(f"sqlite:///{db}")
    _, children = _runs(client)
    done = [child for child in children if child.info.status == "FINISHED"]
    running = [child.info.run_id for child in children if child.info.status == "RUNNING"]
    assert len(done) == finished and running, "every trial ended before the fault: make them slower"
    return client, done, running


def _assert_one_error_line(stderr, *expected):
    progress = re.compile(r"\d\d:\d\d:\d\d ")  # timestamped log lines such as "Ray local: 2 CPUs"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if not progress.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 500, stderr[-3000:]
    for text in expected:
        assert text in lines[0], (text, lines[0])


def _parent_status(client):
    parents, _ = _runs(client)
    return [parent.info.status for parent in parents]


def _stop_part_way(sweep, finished, stop):
    """Stop the driver with `stop` once `finished` trials are done and the next is part way, its
    checkpoints in Tune's saved state for a while; returns (what the finished trials logged, the run
    ids of the trials interrupted, the Ray processes that outlived the driver)."""
    client, done, interrupted = _done_and_going(sweep, sweep.cwd / LEFTOVER_RESULTS, finished)
    logged = _snapshot(client, done)
    assert "Traceback" not in sweep.stderr(), sweep.stderr()[-3000:]  # a resume handles Tune's checkpoint cleanly
    if stop == signal.SIGKILL:
        os.kill(sweep.process.pid, signal.SIGKILL)
        sweep.process.wait()
    else:
        if stop == signal.SIGINT:
            os.killpg(sweep.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        else:
            os.kill(sweep.process.pid, signal.SIGTERM)  # what `kill`, systemd, Kubernetes and Slurm send
        assert sweep.finish() == 128 + stop, sweep.stderr()[-3000:]
        assert "Continue with: accelsweep resume interrupted" in sweep.stderr(), sweep.stderr()[-3000:]
        if stop == signal.SIGTERM:  # the driver alone gets it: nothing but the driver's own line
            _assert_one_error_line(sweep.stderr(), "terminated (SIGTERM)")
        assert _parent_status(client) == ["KILLED"]
    _wait_until(lambda: set(sweep.survivors().values()) <= LINGERING_AFTER[stop], timeout_s=60)
    orphans = sweep.survivors()
    sweep.kill_everything()  # the resume must not find the old local Ray
    return logged, interrupted, orphans


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_where_it_stopped(start_accelsweep, in_tmp_path):
    """Ctrl-C stops `run` after the baseline, a 2nd trial part way; `resume` goes on and gets SIGTERM
    with 2 trials done, the 3rd part way; a 2nd `resume` is killed (SIGKILL) with 3 done; a 3rd
    `resume` finishes: every trial trained once, an interrupted one from its last checkpoint, a
    finished one never logged again.

    The interrupted trials are students of the baseline (`_interrupted_spec`): each resumed sweep
    has a new, empty baseline weights store, which the publisher must fill from the restored
    baseline's checkpoint, or the resumed student would wait for ever; and a student resumes from
    its own checkpoint, whose pruned shapes the replay must give it again (pruned at epoch 0, not
    halfway)."""
    spec = _interrupted_spec()
    epochs, total = spec["train"]["epochs"], len(INTERRUPTED_STUDENTS) + 1
    client = MlflowClient(f"sqlite:///{in_tmp_path / 'mlflow.db'}")
    copy_of_new_mlflow_store(in_tmp_path / "mlflow.db")
    sweep = start_accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    before, interrupted = {}, []
    for finished, stop in [(1, signal.SIGINT), (2, signal.SIGTERM), (3, signal.SIGKILL)]:
        logged, stopped, orphans = _stop_part_way(sweep, finished, stop)
        assert {run_id: logged[run_id] for run_id in before} == before, "trials finished before the interruption were logged again"
        assert set(orphans.values()) <= LINGERING_AFTER[stop], f"Ray processes outlived the driver's {stop.name}: {orphans}"
        before, interrupted = logged, interrupted + stopped
        sweep = start_accelsweep("resume", "interrupted")
    assert sweep.finish() == 0, sweep.stderr()[-3000:]

    parents, children = _runs(client)
    assert len(parents) == 1, "resume started a second parent run"
    assert parents[0].info.status == "FINISHED"
    assert len(children) == total, sorted(child.data.tags.get(TRIAL_ID_TAG) for child in children)
    assert len({child.data.tags[TRIAL_ID_TAG] for child in children}) == total
    assert {child.data.tags[PARENT_TAG] for child in children} == {parents[0].info.run_id}
    for child in children:
        _assert_complete_trial(client, child, epochs)
    after = _snapshot(client, [child for child in children if child.info.run_id in before])
    assert after == before, "trials finished before the interruption were logged again"
    resumed_from = {child.info.run_id: child.data.metrics["resumed_from_epoch"] for child in children}
    assert len(interrupted) == 3 and all(resumed_from[run_id] > 0 for run_id in interrupted), ("restarted from scratch", resumed_from)
    rows = results_rows.sweep_rows(client, parents[0])
    assert len(rows) == total and all(row["status"] == "finished" for row in rows)
    assert all(row["trial_id"] in sweep.stdout() for row in rows), sweep.stdout()
    (baseline,) = [child for child in children if child.data.tags[MODE_TAG] == "baseline"]
    students = {child.data.tags[MODE_TAG]: child for child in children if child is not baseline}
    assert sorted(students) == [f"kd{weight}-cp50" for weight in INTERRUPTED_STUDENTS]
    assert {student.info.run_id for student in students.values()} == set(interrupted)  # each resumed, teacher and all
    for student in students.values():
        assert student.data.metrics["param_count"] < 0.6 * baseline.data.metrics["param_count"]  # pruned, and resumed so
        for note in ("teacher", "start_weights"):
            assert student.data.tags[f"{NOTE_TAG_PREFIX}{note}"].endswith(BASELINE_WEIGHTS_FILE), student.data.tags


# ---------------------------------------------------------------- where the sweep keeps its state fails


def _faulted_spec(**sections):
    # a second trial part way is all these need: the baseline and one trial, with half the data and
    # epochs of the interrupted sweep (a trial still outlasts Tune's 2 s state saves on a quiet machine)
    spec = _spec(
        "faulted",
        data=SLOW_TRIAL["data"] | {"n_samples": 10000},
        model=SLOW_TRIAL["model"],
        space={"dropout": {"choice": [0.0, 0.1]}, "rank": {"choice": [None, 8, 16]}},
        search={"algorithm": "random", "num_samples": 1},
        resources={"cpus_per_worker": 2},  # one trial at a time on a 2-CPU machine
        **sections,
    )
    spec["train"]["epochs"] = 12
    return spec


@pytest.mark.slow
def test_a_results_folder_deleted_mid_sweep_ends_it_in_one_line(start_accelsweep, in_tmp_path):
    spec = _faulted_spec()
    copy_of_new_mlflow_store(in_tmp_path / "mlflow.db")
    sweep = start_accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    client, finished, running = _done_and_going(sweep, in_tmp_path / LEFTOVER_RESULTS)
    (folder,) = (in_tmp_path / LEFTOVER_RESULTS).glob("faulted-*")  # Tune keeps a marker file beside it
    while folder.exists():  # Tune writes into it meanwhile
        shutil.rmtree(folder, ignore_errors=True)
    assert sweep.finish() == 2, sweep.stderr()[-3000:]
    _assert_one_error_line(sweep.stderr(), f"the results folder {folder} was deleted during the sweep", "cannot be resumed")
    assert _parent_status(client) == ["FAILED"]
    for child in finished:  # as trained: the quiet latency measurement comes after the sweep, which stopped
        _assert_complete_trial(client, client.get_run(child.info.run_id), spec["train"]["epochs"], measured=False)
    assert [client.get_run(run_id).info.status for run_id in running] == ["FAILED"] * len(running)  # no resume for them


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs in tmp_path (needs root and a kernel that lets it mount); unmounted at the end."""
    disk = tmp_path / "small_disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a disk to fill: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _fill(disk):
    with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
        while True:
            filler.write(bytes(2**20))
            filler.flush()


@pytest.mark.slow
def test_a_disk_filling_mid_sweep_ends_it_in_one_line_and_resume_goes_on(start_accelsweep, in_tmp_path, small_disk):
    spec = _faulted_spec(ray={"storage_path": str(small_disk)})  # the MLflow store stays on the big disk
    epochs, total = spec["train"]["epochs"], spec["search"]["num_samples"] + 1
    copy_of_new_mlflow_store(in_tmp_path / "mlflow.db")
    sweep = start_accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    client, finished, running = _done_and_going(sweep, small_disk)
    before = _snapshot(client, finished)
    _fill(small_disk)
    assert sweep.finish() == 2, sweep.stderr()[-3000:]
    _assert_one_error_line(sweep.stderr(), f"disk full at {small_disk}/faulted-", "continue with: accelsweep resume faulted")
    assert _parent_status(client) == ["FAILED"]
    sweep.kill_everything()  # the resume must not find the old local Ray

    (small_disk / "filler").unlink()
    resumed = start_accelsweep("resume", "faulted", "--spec", "spec.yaml")  # its own ray.storage_path: vouched for
    assert resumed.finish() == 0, resumed.stderr()[-3000:]
    assert "Traceback" not in resumed.stderr(), resumed.stderr()[-3000:]
    assert _parent_status(client) == ["FINISHED"]
    _, children = _runs(client)
    assert len(children) == total
    for child in children:
        _assert_complete_trial(client, child, epochs)
    assert _snapshot(client, [child for child in children if child.info.run_id in before]) == before, "finished trials were retrained"
    assert all(client.get_run(run_id).data.metrics["resumed_from_epoch"] > 0 for run_id in running)


# ---------------------------------------------------------------- two sweeps at once; a trial diverges


class StartedTogether(NamedTuple):
    """The two sweeps `started_together` ran: their finished commands and a client of their store."""

    twin: Accelsweep
    diverging: Accelsweep
    client: MlflowClient


def _diverging_spec():
    # AdamW's decoupled decay multiplies each weight by (1 - lr * wd) = -2999 per step: inf within
    # one epoch; the baseline (no weight decay) trains normally
    return _spec("diverge", space={"weight_decay": {"grid": [1.0e6]}}, search={"algorithm": "grid", "num_samples": 2})


@pytest.fixture(scope="module")
def started_together(tmp_path_factory):
    """Two sweeps started at the same moment on a store neither has created yet, run to their ends:
    `twin` trains one trial (the baseline), `diverge` the baseline and two trials that diverge.
    One pair of sweeps for the two tests that read them: the store made by whichever comes first,
    and a diverging trial that stops while its sweep carries on."""
    workdir = tmp_path_factory.mktemp("started-together")
    # the store is this directory's sqlite file: another test's URI or Ray must not leak in
    env = {name: value for name, value in os.environ.items() if name not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    specs = [_write(workdir / "twin.yaml", _spec("twin")), _write(workdir / "diverge.yaml", _diverging_spec())]
    sweeps = [Accelsweep(("run", spec), workdir, env) for spec in specs]
    try:
        for sweep in sweeps:
            sweep.finish()
        yield StartedTogether(*sweeps, MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"))
    finally:
        for sweep in sweeps:
            sweep.kill_everything()


def _sweep_runs(client, name):
    parents, children = _runs(client)
    (parent,) = [run for run in parents if run.info.run_name == name]
    return parent, [child for child in children if child.data.tags[PARENT_TAG] == parent.info.run_id]


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_new_store_both_finish(started_together):
    twin, diverging, client = started_together
    assert [twin.process.returncode, diverging.process.returncode] == [0, 0], [twin.stderr()[-2000:], diverging.stderr()[-2000:]]
    parents, _ = _runs(client)
    assert sorted((parent.info.run_name, parent.info.status) for parent in parents) == [("diverge", "FINISHED"), ("twin", "FINISHED")]
    _, (child,) = _sweep_runs(client, "twin")
    _assert_complete_trial(client, child, _spec("twin")["train"]["epochs"])


@pytest.mark.slow
def test_a_diverging_trial_stops_is_tagged_and_the_sweep_carries_on(started_together):
    _, sweep, client = started_together
    assert sweep.process.returncode == 0, sweep.stderr()[-3000:]
    parent, children = _sweep_runs(client, "diverge")
    diverged = [child for child in children if child.data.tags.get(STATUS_TAG) == "diverged"]
    finished = [child for child in children if child.data.tags.get(STATUS_TAG) == "finished"]
    assert len(children) == 3 and len(diverged) == 2 and len(finished) == 1, [c.data.tags for c in children]
    _assert_complete_trial(client, finished[0], _diverging_spec()["train"]["epochs"])
    for child in diverged:
        epoch = int(child.data.tags["accelsweep.diverged_epoch"])
        assert max(_steps(client, child.info.run_id), default=0) < epoch + 1, "it trained past the bad epoch"
        assert "test_accuracy" not in child.data.metrics, "a diverged trial was still measured"
        assert child.data.metrics["diverged"] == 1
    rows = results_rows.sweep_rows(client, parent)
    assert [row["front"] for row in rows if row["status"] == "diverged"] == ["", ""]
    assert [row["mode"] for row in rows if row["front"]] == ["baseline"]
    assert sweep.stdout().count("diverged") == 2, sweep.stdout()
    assert parent.info.status == "FINISHED"


# ---------------------------------------------------------------- fail before any trial starts


def _assert_refused_before_anything_ran(completed, cwd, *expected):
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, completed.stderr
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert not (cwd / LEFTOVER_RESULTS).exists()
    assert _query(cwd / "mlflow.db", "select run_uuid from runs") == []


@pytest.mark.slow
def test_resources_no_node_can_give_fail_fast(accelsweep, in_tmp_path):
    spec = _spec("too-big", resources={"gpus_per_worker": 4})
    completed = accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    _assert_refused_before_anything_ran(completed, in_tmp_path, "resources:", "4 GPU")


def _idx_file(path, magic, dims, payload):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + bytes(payload))


def _idx_with_wrong_magic(directory):
    for prefix in ("train", "t10k"):
        _idx_file(directory / f"{prefix}-images-idx3-ubyte", 2051, (20, 4, 4), [7] * 320)
        _idx_file(directory / f"{prefix}-labels-idx1-ubyte", 2051, (20,), [i % 3 for i in range(20)])
    data = {"source": "idx", "path": str(directory)}
    return data, ("train-labels-idx1-ubyte", "magic number 2051, expected 2049")


def _ragged_csv(directory):
    rows = ["a,b,label"] + [f"{i},{i + 1},{i % 2}" for i in range(30)]
    rows[7] = "1,2"
    (directory / "table.csv").write_text("\n".join(rows) + "\n")
    data = {"source": "csv", "path": str(directory / "table.csv"), "label_column": "label"}
    return data, ("table.csv", "line 8 has 2 columns, expected 3")


def _labels_out_of_range(directory):
    rows = ["a,b,label"] + [f"{i},{i + 1},{i % 3}" for i in range(30)]
    rows[5] = "4,5,7"
    (directory / "table.csv").write_text("\n".join(rows) + "\n")
    data = {"source": "csv", "path": str(directory / "table.csv"), "label_column": "label", "num_classes": 3}
    return data, ("table.csv", "label 7 out of range [0, 3)")


MALFORMED = [_idx_with_wrong_magic, _ragged_csv, _labels_out_of_range]


@pytest.mark.parametrize("malformed", MALFORMED, ids=lambda f: f.__name__.strip("_"))
def test_malformed_data_fails_before_anything_runs(accelsweep_in_process, in_tmp_path, malformed):
    directory = in_tmp_path / "data"
    directory.mkdir()
    data, expected = malformed(directory)
    completed = accelsweep_in_process("run", _write(in_tmp_path / "spec.yaml", _spec("bad-data", data=data)))
    _assert_refused_before_anything_ran(completed, in_tmp_path, "spec.yaml: data:", *expected)


@pytest.mark.slow
def test_a_bad_cell_deep_in_a_streamed_csv_directory_fails_before_any_run(accelsweep, in_tmp_path):
    # validate reads the first rows only; the sweep's first pass over the data (Ray running, no
    # store written yet) finds the cell and names its file, column and row
    write_digits_csv(in_tmp_path / "rows")
    lines = (in_tmp_path / "rows" / "part-2.csv").read_text().splitlines()
    lines[300] = "oops," + lines[300].split(",", 1)[1]
    (in_tmp_path / "rows" / "part-2.csv").write_text("\n".join(lines) + "\n")
    spec = _spec("bad-stream", data={"source": "csv", "path": str(in_tmp_path / "rows")})
    assert accelsweep("validate", _write(in_tmp_path / "spec.yaml", spec)).returncode == 0
    completed = accelsweep("run", "spec.yaml")
    _assert_refused_before_anything_ran(
        completed, in_tmp_path, "spec.yaml: data: ", "part-2.csv: cannot read: In CSV column #0: Row #301: CSV conversion error to float: invalid value 'oops'"
    )


# ---------------------------------------------------------------- the tracking server goes away


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url):
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback over a sqlite store in tmp_path; `.stop()` and `.start()`
    take it away and bring it back (same store, same port). Stopped for good when the test ends."""

    class Server:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        db = tmp_path / "server.db"
        process = None

        def start(self):
            command = [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{self.db}",
                "--default-artifact-root", str(tmp_path / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ]  # fmt: skip
            log = open(tmp_path / "mlflow-server.log", "a")
            self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
            deadline = time.monotonic() + 300  # a hang guard: at load 11 it took 70 s to import mlflow
            while not _answers(self.url):
                assert self.process.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not answer within 300 s"
                time.sleep(0.5)

        def stop(self):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    server = Server()
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_tracking_server_outage_delays_writes_but_loses_none(start_accelsweep, in_tmp_path, mlflow_server):
    spec = _spec(
        "outage",
        space={"dropout": {"choice": [0.0, 0.1, 0.3]}},
        search={"algorithm": "random", "num_samples": 2},
        resources={"max_concurrent_trials": 1},
        tracking={"uri": mlflow_server.url},
    )
    spec["train"]["epochs"] = 3
    sweep = start_accelsweep("run", _write(in_tmp_path / "spec.yaml", spec))
    sweep.wait_for(lambda: _finished_trials(mlflow_server.db) >= 1, "a trial finished in MLflow")
    mlflow_server.stop()
    sweep.wait_for(lambda: "unreachable" in sweep.stderr(), "a write that found the server away")
    mlflow_server.start()
    assert sweep.finish() == 0, sweep.stderr()[-3000:]

    client = MlflowClient(mlflow_server.url)
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == 3, [run.info.run_name for run in parents + children]
    for child in children:
        _assert_complete_trial(client, child, spec["train"]["epochs"])
        assert len(client.get_metric_history(child.info.run_id, "test_accuracy")) == 1
    assert "writes were delayed by an outage and then delivered" in sweep.stderr(), sweep.stderr()[-3000:]
