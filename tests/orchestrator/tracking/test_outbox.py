"""orchestrator.tracking.outbox: ordered delivery that keeps what it cannot deliver and retries it."""

import pickle

from orchestrator.tracking.outbox import Outbox


class Destination:
    """Receives entries; while `down`, every delivery raises as an unreachable server would."""

    def __init__(self):
        self.received = []
        self.down = False

    def __call__(self, entry):
        if self.down:
            raise ConnectionError("connection refused")
        self.received.append(entry)


def test_entries_arrive_in_order_while_the_destination_is_up():
    destination = Destination()
    outbox = Outbox(destination)
    for entry in range(5):
        outbox.send(entry)
    assert destination.received == [0, 1, 2, 3, 4]
    assert outbox.pending == [] and outbox.delayed_delivered == 0


def test_an_outage_keeps_entries_and_waits_before_retrying():
    destination = Destination()
    outbox = Outbox(destination, retry_seconds=3600)
    outbox.send("a")
    destination.down = True
    outbox.send("b")
    outbox.send("c")
    assert outbox.pending == ["b", "c"] and outbox.unreachable_since is not None
    destination.down = False
    outbox.send("d")  # the retry time has not come: nothing is tried, order is kept
    assert destination.received == ["a"] and outbox.pending == ["b", "c", "d"]
    outbox.flush(force=True)
    assert destination.received == ["a", "b", "c", "d"]
    assert outbox.delayed_delivered == 3 and outbox.unreachable_since is None


def test_a_failure_in_the_middle_stops_delivery_at_that_entry():
    delivered = []

    def deliver(entry):
        if entry == "poison" and len(delivered) < 2:
            raise OSError("not now")
        delivered.append(entry)

    outbox = Outbox(deliver, retry_seconds=0)
    outbox.send("first")
    outbox.send("poison")
    outbox.send("after")
    assert delivered == ["first"] and outbox.pending == ["poison", "after"]
    delivered.append("marker")
    outbox.flush()
    assert delivered == ["first", "marker", "poison", "after"]


def test_pending_entries_survive_a_restart_through_plain_data():
    destination = Destination()
    destination.down = True
    first = Outbox(destination)
    first.send(("trial", "metrics", [1.0]))
    saved = pickle.loads(pickle.dumps(first.pending))
    destination.down = False
    second = Outbox(destination, pending=saved)
    second.flush()
    assert destination.received == [("trial", "metrics", [1.0])]


def test_drain_gives_up_after_its_timeout_and_says_so():
    destination = Destination()
    destination.down = True
    outbox = Outbox(destination, retry_seconds=0.01)
    outbox.send("kept")
    assert outbox.drain(timeout_s=0.05) is False
    assert outbox.pending == ["kept"]
    destination.down = False
    assert outbox.drain(timeout_s=5) is True and destination.received == ["kept"]
