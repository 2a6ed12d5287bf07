"""The inline request path (requests run in the read that brought them) against the
general one (a task per request, aiokatcp's way): random request streams, cut into
random chunks, must get the same bytes back."""
import asyncio

from hypothesis import given, settings, strategies as st

from ctlwire import aiokatcp as ck

from .conftest import make_device


class Transport:
    """Collects what the server writes; the rest of a transport's API, inert."""

    def __init__(self):
        self.out = bytearray()

    def write(self, data):
        self.out += data

    def get_extra_info(self, key, default=None):
        return ("127.0.0.1", 5000) if key == "peername" else default

    def is_closing(self):
        return False

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass


Device = make_device(ck)


class TaskPerRequest(Device):
    EAGER_REQUESTS = False


words = st.sampled_from(["1", "2.5", "x", "", "a b", "now", "red", "dark-green", "[::1]:5"])
requests = st.tuples(
    st.sampled_from(["echo", "add", "types", "fail", "invalid", "nosuch", "watchdog",
                     "informs", "inform-reply", "crash", "sensor-value", "help"]),
    st.lists(words, max_size=4),
    st.booleans())


def _wire(reqs):
    lines = []
    for i, (name, args, with_mid) in enumerate(reqs, 1):
        lines.append(bytes(ck.Message.request(name, *args, mid=i if with_mid else None)))
    return b"".join(lines)


async def _serve(cls, data, cuts):
    server = cls("127.0.0.1", 0)
    conn = ck.server.ClientConnection(server, 1 << 16)
    transport = Transport()
    conn.connection_made(transport)
    start = len(transport.out)
    pos = 0
    for cut in sorted(cuts) + [len(data)]:
        conn.data_received(data[pos:cut])
        pos = cut
        await asyncio.sleep(0)
    for _ in range(5):  # let task-per-request handlers finish
        await asyncio.sleep(0)
    return bytes(transport.out[start:])


def _comparable(out):
    # tracebacks name different frames; timestamps differ
    lines = []
    for line in out.split(b"\n"):
        if line.startswith(b"!crash"):
            line = line.split(b" ", 2)[0] + b" fail <traceback>"
        if line.startswith(b"#sensor-value"):
            line = b" ".join(line.split(b" ")[:1] + line.split(b" ")[2:])
        lines.append(line)
    return lines


@settings(max_examples=60, deadline=None)
@given(reqs=st.lists(requests, min_size=1, max_size=12), data=st.data())
def test_inline_path_answers_as_a_task_per_request(reqs, data):
    wire = _wire(reqs)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    inline = asyncio.run(_serve(Device, wire, cuts))
    tasks = asyncio.run(_serve(TaskPerRequest, wire, cuts))
    # with a task per request an error reply (sent from the task's done callback) may
    # be overtaken by a later request's reply; the inline path answers in order
    assert sorted(_comparable(inline)) == sorted(_comparable(tasks))
    replies = [line.split(b" ")[0] for line in inline.split(b"\n") if line.startswith(b"!")]
    assert replies == [b"!" + name.encode() + (b"[%d]" % i if mid else b"")
                       for i, (name, _, mid) in enumerate(reqs, 1)]
