"""Generator methods stream their values through the broker while they run."""
from __future__ import annotations

import threading

import pytest

from ctlwire.roc import RemoteError, RocClient, RocTimeout


class Mount:
    """Yields a step, then waits until the caller has seen it before the next one."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self.finished = False

    def slew_steps(self, n):
        """Slew in n steps."""
        for i in range(n):
            self.seen.clear()
            yield {"step": i}
            # only goes on once the caller got the step: proves it arrived early
            if not self.seen.wait(5.0):
                raise RuntimeError(f"step {i} did not reach the caller while running")
        self.finished = True
        return "on target"

    def count(self, n):
        yield from range(n)
        return n

    def broken(self):
        yield 1
        raise ValueError("encoder lost")

    def plain(self):
        return 3


@pytest.fixture
def mount(broker, serve, ep):
    m = Mount()
    serve("mount", m)
    client = RocClient(ep, timeout=5.0)
    try:
        yield m, client
    finally:
        client.close()


def test_each_step_arrives_before_the_method_returns(mount):
    m, client = mount
    steps = []
    it = client["mount"].slew_steps(3)
    for step in it:
        assert not m.finished
        steps.append(step)
        m.seen.set()
    assert steps == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert it.result == "on target" and m.finished


def test_the_final_value_ends_the_iteration_like_a_generator_return(mount):
    _, client = mount
    it = client["mount"].count(4)
    assert list(it) == [0, 1, 2, 3]
    assert it.result == 4
    with pytest.raises(StopIteration) as stop:
        next(it)
    assert stop.value.value == 4


def test_a_remote_exception_comes_after_the_steps_before_it(mount):
    _, client = mount
    got = []
    with pytest.raises(ValueError, match="encoder lost") as info:
        for v in client["mount"].broken():
            got.append(v)
    assert got == [1]
    assert isinstance(info.value, RemoteError)


def test_call_async_takes_a_progress_callback(mount):
    m, client = mount
    got = []

    def on_step(v):
        got.append(v)
        m.seen.set()

    fut = client.call_async("mount", "slew_steps", 2, on_progress=on_step)
    assert fut.result() == "on target"
    assert got == [{"step": 0}, {"step": 1}]


def test_many_values_arrive_in_order_and_none_is_lost(mount):
    _, client = mount
    it = client["mount"].count(5000)
    assert list(it) == list(range(5000))


def test_describe_marks_generators_and_plain_methods_still_return(mount):
    _, client = mount
    assert client["mount"].plain() == 3
    objects = client.objects()
    assert objects["mount"]["generators"] == ["broken", "count", "slew_steps"]
    assert objects["mount"]["methods"]["slew_steps"] == "Slew in n steps."


def test_the_timeout_runs_between_values_not_over_the_whole_call(broker, serve, ep):
    import time

    class Slow:
        def ticks(self, n, gap):
            for i in range(n):
                time.sleep(gap)
                yield i

    serve("slow", Slow())
    client = RocClient(ep, timeout=2.0)
    try:
        # 8 ticks 0.3 s apart: 2.4 s in all, never 2 s without a value
        assert list(client["slow"].ticks(8, 0.3)) == list(range(8))
        with pytest.raises(RocTimeout):
            list(client["slow"].ticks(1, 4.0))
    finally:
        client.close()
