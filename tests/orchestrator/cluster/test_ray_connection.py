"""orchestrator.cluster.ray_connection: the local Ray that `accelsweep run` starts listens on loopback only.

A real Ray is started in a child process (with `ray` imported before `connect_ray`, as the CLI's
modules do); the test lists, from /proc, every listening TCP socket of that process and of all its
descendants (GCS, raylet, agents, workers)."""

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import os, sys
import ray
from orchestrator.cluster.ray_connection import connect_ray

@ray.remote
def switches():
    return os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER") + os.environ.get("ACCELSWEEP_PLACEMENT_GROUP_CLEANER")

connect_ray(None)
print("ready", ray.get(switches.remote()), flush=True)  # as a worker process sees them
sys.stdin.readline()
ray.shutdown()
"""


def descendants(pid):
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def listening_addresses():
    addresses = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # per-word little endian
            addresses[fields[9]] = ipaddress.ip_address(packed)
    return addresses


def is_loopback(address):
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


@pytest.mark.slow
def test_the_local_ray_listens_on_loopback_only(in_tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=in_tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        # a trial driver in a worker of the local Ray starts Ray Train without a preemption watcher
        # or a placement-group cleaner
        assert child.stdout.readline().strip() == "ready 00"
        listening = listening_addresses()
        sockets = {
            (pid, str(listening[inode]))
            for pid in descendants(child.pid)
            for inode in socket_inodes(pid)
            if inode in listening
        }
        assert len(sockets) >= 3, sockets  # GCS, raylet, a worker at least
        assert [s for s in sockets if not is_loopback(ipaddress.ip_address(s[1]))] == []
    finally:
        child.communicate("\n", timeout=120)
