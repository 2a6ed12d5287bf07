"""CURVE security for group ports: a key pair per node and an allow-list of public keys.

Every bound port (pub, answer) is a CURVE server with the node's own key pair and checks
connecting clients against the allow-list through a ZAP handler
(:class:`zmq.auth.thread.ThreadAuthenticator`, one per zmq context). Every connecting port
(sub, query) is a CURVE client that authenticates the server with the server's public key,
which must also be on the allow-list, so a forged discovery record cannot point a member at
a stranger.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

import zmq
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["CurveSecurity", "ZAP_DOMAIN"]

ZAP_DOMAIN = "ctlwire.dc"


class _AllowList:
    """Credentials provider for the authenticator: allows the keys in a set."""

    __slots__ = ("keys",)

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


class CurveSecurity:
    """One node's CURVE key pair and the public keys it accepts.

    Parameters
    ----------
    public_key, secret_key : bytes
        This node's key pair, z85-encoded (40 bytes each), e.g. from
        :func:`zmq.curve_keypair` or :meth:`generate`.
    allowed : iterable of bytes
        z85 public keys of the nodes that may connect and be connected to. This node's own
        key is always allowed.

    Examples
    --------
    >>> a, b = CurveSecurity.generate(), CurveSecurity.generate()
    >>> a.allow(b.public_key); b.allow(a.public_key)
    """

    def __init__(self, public_key: bytes, secret_key: bytes,
                 allowed: Iterable[bytes] = ()) -> None:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE support")
        for name, key in (("public_key", public_key), ("secret_key", secret_key)):
            if not isinstance(key, bytes) or len(key) != 40:
                raise ValueError(f"{name} must be a 40-byte z85 key, got {key!r:.60}")
        self.public_key = public_key
        self.secret_key = secret_key
        self._allowed = {public_key, *allowed}
        self._lock = threading.Lock()
        self._auths: dict[int, ThreadAuthenticator] = {}

    @classmethod
    def generate(cls, allowed: Iterable[bytes] = ()) -> CurveSecurity:
        """Make a fresh key pair."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret, allowed)

    @property
    def allowed(self) -> frozenset[bytes]:
        """The accepted public keys."""
        return frozenset(self._allowed)

    def allow(self, *keys: bytes) -> None:
        """Add public keys to the allow-list (takes effect for new connections)."""
        for key in keys:
            if not isinstance(key, bytes) or len(key) != 40:
                raise ValueError(f"public key must be a 40-byte z85 key, got {key!r:.60}")
        self._allowed.update(keys)

    def is_allowed(self, key: bytes) -> bool:
        """True if ``key`` is on the allow-list."""
        return key in self._allowed

    def start(self, ctx: zmq.Context) -> None:
        """Start the ZAP handler for ``ctx`` (once per context; repeats are ignored)."""
        with self._lock:
            if id(ctx) in self._auths:
                return
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve_callback(ZAP_DOMAIN, _AllowList(self._allowed))
            self._auths[id(ctx)] = auth

    def stop(self, ctx: zmq.Context | None = None) -> None:
        """Stop the ZAP handler of ``ctx``, or every one this object started."""
        with self._lock:
            if ctx is None:
                auths, self._auths = list(self._auths.values()), {}
            else:
                auth = self._auths.pop(id(ctx), None)
                auths = [auth] if auth is not None else []
        for auth in auths:
            auth.stop()

    def apply_server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server that checks clients against the allow-list."""
        self.start(sock.context)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SERVER, 1)

    def apply_client(self, sock: zmq.Socket, server_key: bytes) -> None:
        """Make ``sock`` a CURVE client of the server whose public key is ``server_key``.

        Raises
        ------
        PermissionError
            If ``server_key`` is not on the allow-list.
        """
        if not self.is_allowed(server_key):
            raise PermissionError(f"server key {server_key!r} is not on the allow-list")
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
