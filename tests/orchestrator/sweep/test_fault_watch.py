"""The sweep's own watch on its results folder, and how `run` and `resume` end on a fault or
SIGTERM: in this process, with a real MLflow store and real folders (no Ray started; the
sweeps that really meet these faults are in test_faults.py)."""

import errno
import logging
import os
import shutil
import signal
import time

import pytest
import sqlalchemy
from mlflow.entities import Metric

from orchestrator.cli import sweep_workflow
from orchestrator.config.loading import parse_spec
from orchestrator.sweep import faults
from orchestrator.sweep.faults import FaultWatch, SweepFault
from orchestrator.tracking import store
from orchestrator.tracking.tags import PARENT_TAG


def test_a_results_folder_deleted_or_replaced_is_a_fault_that_cannot_be_resumed(tmp_path):
    folder = tmp_path / "sweep-20261202"
    watch = FaultWatch(str(folder))
    assert watch.fault() is None  # not made yet: Tune makes it as the sweep starts
    folder.mkdir()
    assert watch.fault() is None
    shutil.rmtree(folder)
    folder.mkdir()  # what Tune's next state save does
    fault = watch.fault()
    assert str(fault) == f"the results folder {folder} was deleted during the sweep" and not fault.resumable


def test_a_full_disk_is_a_resumable_fault(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "MIN_FREE_BYTES", 2**80)  # no disk has that much free: this one is full
    fault = FaultWatch(str(tmp_path)).fault()
    assert str(fault) == f"disk full at {tmp_path}" and fault.resumable


def test_no_space_raised_inside_the_watch_becomes_a_disk_full_fault(tmp_path):
    watch = FaultWatch(str(tmp_path))
    with pytest.raises(SweepFault, match=f"disk full at {tmp_path}/experiment_state.json"):
        with faults.watched(watch):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "experiment_state.json"))
    with pytest.raises(ValueError, match="not a fault"), faults.watched(watch):
        raise ValueError("not a fault")


def test_tune_errors_that_a_fault_explains_are_not_logged(tmp_path, monkeypatch):
    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    tune_logger.addHandler(handler)
    watch = FaultWatch(str(tmp_path))
    try:
        with faults.watched(watch):
            tune_logger.error("Trial task failed before any fault")
            monkeypatch.setattr(faults, "MIN_FREE_BYTES", 2**80)
            tune_logger.error("Trial task failed: No space left on device")
    finally:
        tune_logger.removeHandler(handler)
    assert [record.getMessage() for record in seen] == ["Trial task failed before any fault"]
    assert not tune_logger.filters


@pytest.fixture
def sweep_run(tmp_path):
    client = store.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = parse_spec({"name": "watched", "data": {"source": "digits"}}, source="spec.yaml")
    return client, store.start_sweep_run(client, spec, "name: watched\n", str(tmp_path / "results")), spec


def test_a_fault_marks_the_sweep_failed_and_says_whether_resume_can_go_on(sweep_run, tmp_path):
    client, parent_id, spec = sweep_run
    with pytest.raises(sweep_workflow.SweepFailed) as failed:
        with sweep_workflow.resumable_on_interrupt(client, parent_id, spec):
            raise SweepFault(f"disk full at {tmp_path}", resumable=True)
    assert str(failed.value).startswith(f"disk full at {tmp_path}; the sweep stopped (the trials that finished are kept")
    assert str(failed.value).endswith("free some space, then continue with: accelsweep resume watched")
    assert client.get_run(parent_id).info.status == "FAILED"


def test_a_fault_that_cannot_be_resumed_fails_the_running_trials_runs_too(sweep_run, tmp_path):
    client, parent_id, spec = sweep_run
    trial = client.create_run(client.get_run(parent_id).info.experiment_id, tags={PARENT_TAG: parent_id})
    with pytest.raises(sweep_workflow.SweepFailed, match="it cannot be resumed$"):
        with sweep_workflow.resumable_on_interrupt(client, parent_id, spec):
            raise SweepFault(f"the results folder {tmp_path} was deleted during the sweep", resumable=False)
    assert [client.get_run(run_id).info.status for run_id in (parent_id, trial.info.run_id)] == ["FAILED", "FAILED"]


def test_sigterm_ends_the_sweep_as_ctrl_c_does(sweep_run):
    client, parent_id, spec = sweep_run
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(sweep_workflow.UserInterrupt) as interrupted:
        with sweep_workflow.resumable_on_interrupt(client, parent_id, spec):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)  # the handler interrupts it
            pytest.fail("SIGTERM was not handled")
    assert str(interrupted.value) == "terminated (SIGTERM); the sweep's state is saved. Continue with: accelsweep resume watched"
    assert interrupted.value.exit_code == 143
    assert client.get_run(parent_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupt_inside_a_store_write_still_marks_the_sweep_killed(sweep_run):
    # Ctrl-C or SIGTERM lands anywhere: here just after a SELECT inside log_batch's write
    # transaction, the point where the sqlite cursor it leaves behind still holds the write lock
    client, parent_id, spec = sweep_run
    armed = [True]

    def interrupt_once(connection, cursor, statement, *args):
        if armed and statement.lstrip().upper().startswith("SELECT"):
            armed.clear()
            raise KeyboardInterrupt

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_once)
    try:
        with pytest.raises(sweep_workflow.UserInterrupt):
            with sweep_workflow.resumable_on_interrupt(client, parent_id, spec):
                client.log_batch(parent_id, metrics=[Metric("val_accuracy", 0.5, 0, 1)])
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_once)
    assert not armed, "the write ran no SELECT to interrupt"
    assert client.get_run(parent_id).info.status == "KILLED"
