"""The local tracking store: files that are not MLflow stores are refused and never written, a
locked or full store says so in one line, and two processes creating one new store do not race."""

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys

import pytest

from orchestrator.tracking import store
from orchestrator.tracking.store import TrackingError


def _foreign_database(path):
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("create table customers (id integer, name text)")
        db.execute("insert into customers values (1, 'Ada')")
        db.commit()


def _garbage(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))


@pytest.mark.parametrize("create", [True, False], ids=["run", "report"])
@pytest.mark.parametrize(
    "make, expected",
    [
        (_foreign_database, "another program's sqlite database (tables: customers)"),
        (_garbage, "is not an sqlite database"),
        (os.mkfifo, "is a FIFO"),
        (os.mkdir, "is a directory"),
    ],
    ids=["foreign-sqlite", "garbage", "fifo", "directory"],
)
def test_a_file_that_is_not_an_mlflow_store_is_refused_untouched(tmp_path, make, expected, create):
    path = tmp_path / "mlflow.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(TrackingError, match="not an") as refused:
        store.connect(f"sqlite:///{path}", create=create)  # a FIFO is never opened: this does not hang
    assert expected in str(refused.value) and str(path) in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert (path.read_bytes() if path.is_file() else None) == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["mlflow.db"]  # no journal, no lock file


def test_a_device_is_not_a_store():
    with pytest.raises(TrackingError, match="/dev/full is a character device"):
        store.connect("sqlite:////dev/full", create=False)


def _database_without_tables(path):
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("create table gone (id integer)")
        db.execute("drop table gone")


@pytest.mark.parametrize("make", [lambda path: path.touch(), _database_without_tables], ids=["empty-file", "no-tables"])
def test_reading_an_empty_store_says_so_and_creates_nothing(tmp_path, make):
    path = tmp_path / "mlflow.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(TrackingError, match="no MLflow store at"):
        store.connect(f"sqlite:///{path}", create=False)
    assert path.read_bytes() == before


def test_a_store_locked_by_another_process_says_so(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    _foreign_database(path)  # any sqlite database: the lock is met before its tables are read
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "db.execute('begin exclusive'); print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(store, "LOCK_WAIT_S", 0.2)
        with pytest.raises(TrackingError, match=r"mlflow.db is locked by another process \(waited 0.2 s\)"):
            store.connect(f"sqlite:///{path}", create=False)
    finally:
        holder.communicate("")


def _full_tmpfs(directory):
    # a 1 MB tmpfs, filled: needs root and a kernel that lets this process mount
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as filler:
        while True:
            filler.write(bytes(65536))


def test_a_new_store_on_a_full_disk_says_disk_full_and_leaves_nothing(tmp_path):
    full = tmp_path / "full"
    _full_tmpfs(full)
    try:
        with pytest.raises(TrackingError, match=f"disk full at {full}/mlflow.db"):
            store.connect(f"sqlite:///{full}/mlflow.db", create=True)
        assert sorted(item.name for item in full.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "--lazy", str(full)], check=True)  # MLflow keeps its engine (and file) open


def _create_store_and_a_run(uri, barrier, errors):
    barrier.wait()  # both processes start creating the store at the same moment
    try:
        client = store.connect(uri)
        client.create_run(client.create_experiment(f"sweep-{os.getpid()}"))
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}")


@pytest.mark.slow  # ten new stores, two processes each: about a second of MLflow's migrations per store
def test_two_processes_creating_one_new_store_at_once_both_succeed(tmp_path):
    fork = multiprocessing.get_context("fork")  # this process's imports are shared: only the store is new
    for attempt in range(10):
        uri = f"sqlite:///{tmp_path / str(attempt) / 'mlflow.db'}"
        (tmp_path / str(attempt)).mkdir()
        barrier, errors = fork.Barrier(2), fork.Queue()
        creators = [fork.Process(target=_create_store_and_a_run, args=(uri, barrier, errors)) for _ in range(2)]
        for creator in creators:
            creator.start()
        for creator in creators:
            creator.join(timeout=120)
        assert [creator.exitcode for creator in creators] == [0, 0]
        assert errors.empty(), (attempt, errors.get())
        client = store.connect(uri, create=False)
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 2
