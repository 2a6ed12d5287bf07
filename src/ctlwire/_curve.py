"""CURVE security shared by the families: a key pair per node and an allow-list of keys.

Imports only pyzmq and the standard library, so any family may use it without loading
another family's modules (``ctlwire.dc.security`` re-exports it for group ports, and
``ctlwire.roc`` uses it for brokers, clients and servers).

For group ports (dc): every bound port (pub, answer) is a CURVE server with the node's own key pair and checks
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

__all__ = ["CurveSecurity", "ZAP_DOMAIN", "load_allowed_keys"]

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
                 allowed: Iterable[bytes] = (), *, domain: str = ZAP_DOMAIN) -> None:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE support")
        for name, key in (("public_key", public_key), ("secret_key", secret_key)):
            if not isinstance(key, bytes) or len(key) != 40:
                raise ValueError(f"{name} must be a 40-byte z85 key, got {key!r:.60}")
        self.public_key = public_key
        self.secret_key = secret_key
        self._allowed = {public_key, *allowed}
        self.domain = domain
        self._lock = threading.Lock()
        self._auths: dict[int, ThreadAuthenticator] = {}

    @classmethod
    def generate(cls, allowed: Iterable[bytes] = ()) -> CurveSecurity:
        """Make a fresh key pair."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret, allowed)

    @classmethod
    def from_files(cls, secret_file: str, allow_dir: str | None = None, *,
                   domain: str = ZAP_DOMAIN) -> CurveSecurity:
        """Load a key pair from a ZeroMQ certificate file (``zmq.auth``'s
        ``.key_secret`` format) and allow the public keys of every ``*.key`` /
        ``*.key_secret`` certificate in ``allow_dir``.

        Raises
        ------
        ValueError
            Naming the file that is missing, unreadable or holds no secret key.
        """
        import zmq.auth
        try:
            public, secret = zmq.auth.load_certificate(secret_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read CURVE key pair from {secret_file!r}: {exc}") \
                from None
        if not secret:
            raise ValueError(f"{secret_file!r} holds no secret key (a .key_secret file "
                             "is needed)")
        allowed = load_allowed_keys(allow_dir) if allow_dir else []
        return cls(public, secret, allowed, domain=domain)

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
            auth.configure_curve_callback(self.domain, _AllowList(self._allowed))
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
        sock.setsockopt(zmq.ZAP_DOMAIN, self.domain.encode())
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


def load_allowed_keys(directory: str) -> list[bytes]:
    """The z85 public keys of the ZeroMQ certificates (``*.key``, ``*.key_secret``)
    in ``directory``.

    Raises
    ------
    ValueError
        When ``directory`` is not a directory or a certificate cannot be read.
    """
    import os

    import zmq.auth
    if not os.path.isdir(directory):
        raise ValueError(f"allowed-keys directory {directory!r} is not a directory")
    keys = []
    for name in sorted(os.listdir(directory)):
        if name.endswith((".key", ".key_secret")):
            path = os.path.join(directory, name)
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read certificate {path!r}: {exc}") from None
            keys.append(public)
    return keys


def apply_client_trusting(security: CurveSecurity | None, sock: zmq.Socket,
                          server_key: bytes | None) -> None:
    """Make ``sock`` a CURVE client of ``server_key``, a key the caller names
    explicitly (a broker's), so it is added to the allow-list first; nothing when
    ``security`` is None."""
    if security is None:
        return
    if server_key is None:
        raise ValueError("a CURVE client needs the server's public key")
    security.allow(server_key)
    security.apply_client(sock, server_key)
