"""The request paths of the server against each other on random request streams cut
into random chunks: the compiled inline path (``_serve``), its Python reference
(``ClientConnection._serve_read_py``), and the general path with a task per request
(aiokatcp's way)."""
import asyncio
import re

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


class Device(make_device(ck)):
    async def request_both(self, ctx):
        """Reply and return (an error)."""
        ctx.reply("ok")
        return 1

    async def request_nap(self, ctx, *args: str) -> tuple:
        """Suspend twice (so the request continues in a task), then answer."""
        ctx.inform("napping")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return args


class TaskPerRequest(Device):
    EAGER_REQUESTS = False


words = st.sampled_from(["1", "2.5", "x", "", "a b", "now", "red", "dark-green", "[::1]:5"])
requests = st.tuples(
    st.sampled_from(["echo", "add", "types", "fail", "invalid", "nosuch", "watchdog",
                     "informs", "inform-reply", "crash", "sensor-value", "help", "nap",
                     "set", "both"]),
    st.lists(words, max_size=4),
    st.booleans())


def _wire(reqs):
    lines = []
    for i, (name, args, with_mid) in enumerate(reqs, 1):
        lines.append(bytes(ck.Message.request(name, *args, mid=i if with_mid else None)))
    return b"".join(lines)


async def _serve(cls, data, cuts, compiled=True):
    saved = ck.server._serve_read
    if not compiled:
        ck.server._serve_read = None
    try:
        return await _serve_with(cls, data, cuts)
    finally:
        ck.server._serve_read = saved


async def _serve_with(cls, data, cuts):
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
    for _ in range(10):  # let handlers that run in tasks finish
        await asyncio.sleep(0)
    return bytes(transport.out[start:])


def _comparable(out):
    # tracebacks name different frames; timestamps differ
    lines = []
    for line in out.split(b"\n"):
        if line.startswith(b"!crash"):
            line = line.split(b" ", 2)[0] + b" fail <traceback>"
        if line.startswith(b"#log"):
            # level and logger, and the last line of the traceback (frames differ)
            parts = line.split(b" ")
            assert parts[4].startswith(b"Traceback")
            line = b" ".join(parts[:2] + parts[3:4] + [parts[4].split(b"\\n")[-2]])
        if line.startswith(b"#sensor-value"):
            line = b" ".join(line.split(b" ")[:1] + line.split(b" ")[2:])
        lines.append(line)
    return lines


@settings(max_examples=150, deadline=None)
@given(reqs=st.lists(requests, min_size=1, max_size=12), data=st.data())
def test_request_paths_answer_alike(reqs, data):
    wire = _wire(reqs)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    inline = asyncio.run(_serve(Device, wire, cuts))
    reference = asyncio.run(_serve(Device, wire, cuts, compiled=False))
    tasks = asyncio.run(_serve(TaskPerRequest, wire, cuts))
    assert _comparable(inline) == _comparable(reference)
    # with a task per request an error reply (sent from the task's done callback) may
    # be overtaken by a later request's reply
    assert sorted(_comparable(inline)) == sorted(_comparable(tasks))
    # requests that finish in the read are answered in order (``nap`` suspends)
    replies = [line.split(b" ")[0] for line in inline.split(b"\n")
               if line.startswith(b"!") and not line.startswith(b"!nap")]
    assert replies == [b"!" + name.encode() + (b"[%d]" % i if mid else b"")
                       for i, (name, _, mid) in enumerate(reqs, 1) if name != "nap"]


def test_server_and_connection_provide_what_the_compiled_path_declares():
    """``_serve.pyx`` uses exactly the names of ServingServer / ServedConnection."""
    import inspect

    async def main():
        server = Device("127.0.0.1", 0)
        conn = ck.server.ClientConnection(server, 1 << 16)
        conn.connection_made(Transport())
        for proto, obj in ((ck.server.ServingServer, server),
                           (ck.server.ServedConnection, conn)):
            names = set(proto.__annotations__)
            names.update(n for n, v in vars(proto).items()
                         if inspect.isfunction(v) and not n.startswith("__"))
            assert names and all(hasattr(obj, n) for n in names), proto
        with open(ck.server.__file__.replace("server.py", "_serve.pyx")) as f:
            source = f.read().split('"""', 2)[2]  # the code, without the docstring
        used = set(re.findall(r"\b(?:conn|server)\.(_?\w+)", source))
        declared = set()
        for proto in (ck.server.ServingServer, ck.server.ServedConnection):
            declared.update(proto.__annotations__)
            declared.update(n for n in vars(proto) if not n.startswith("__"))
        assert used <= declared, used - declared

    asyncio.run(main())
