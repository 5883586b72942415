"""A TCP proxy in front of PostgreSQL that can lose the reply to a COMMIT.

The fault it reproduces is the one that makes a commit's outcome unknown: the client
sent COMMIT, the server committed, and the connection died before the reply came back
(asyncpg: "connection was closed in the middle of operation"; psycopg: "server closed
the connection unexpectedly"). Timing such a fault from outside is hopeless; a proxy
that reads the protocol makes it exact:

- it parses what the client sends (the startup packets, then typed messages) and, when
  armed, recognises a COMMIT - a simple query (asyncpg) or the Parse message of the
  extended protocol (psycopg);
- it forwards the COMMIT, then swallows everything the server answers until the server
  is ready for the next query (`ReadyForQuery`), so the commit has *finished* on the
  server, and only then closes both sockets: the client hears nothing but the close.

It can also lose the COMMIT itself (`lose_commits`: the connection is cut instead of
forwarding it, so the server rolls back while the client cannot tell), hold the reply to
a COMMIT the server has finished until the test releases it (`hold_commit_replies`:
the client is still waiting when its task is cancelled or its timeout fires), and cut
every open connection at once (`drop_all`), the way a failover or a
`pg_terminate_backend` does. Only the standard library is used; the proxy listens on a
free 127.0.0.1 port and runs one thread per direction per connection.

Example:
    >>> proxy = PgProxy()                       # doctest: +SKIP
    >>> engine = create_engine(proxy.url(url))  # doctest: +SKIP
    >>> proxy.lose_commit_replies(1)            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from typing import Final

from sqlalchemy.engine import make_url

__all__ = ["PgProxy"]

_SSL_REQUEST: Final = 80877103
_GSSENC_REQUEST: Final = 80877104
_CANCEL_REQUEST: Final = 80877102


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        try:
            chunk = sock.recv(size)
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _is_commit(kind: bytes, body: bytes) -> bool:
    if kind == b"Q":  # simple query: the text, NUL-terminated
        text = body.split(b"\0", 1)[0]
    elif kind == b"P":  # Parse: statement name, NUL, query text, NUL, ...
        parts = body.split(b"\0", 2)
        text = parts[1] if len(parts) > 1 else b""
    else:
        return False
    return text.strip().rstrip(b";").strip().upper() in {b"COMMIT", b"END", b"COMMIT WORK"}


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: PgProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.single_byte_replies = 0  # answers to SSL/GSSENC requests (one raw byte)
        self.swallowing = False  # a COMMIT went through: keep its reply from the client
        self.holding = False  # a COMMIT went through: hold its reply until released
        self.held: list[bytes] = []
        self.closed = False
        self.lock = threading.Lock()

    def start(self) -> None:
        for target in (self._client_to_server, self._server_to_client):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.proxy._forget(self)

    def _client_to_server(self) -> None:
        try:
            # startup: untyped packets (length, code, ...) until the StartupMessage
            while True:
                head = _recv_exactly(self.client, 8)
                if head is None:
                    return
                length, code = struct.unpack("!ii", head)
                rest = _recv_exactly(self.client, length - 8) if length > 8 else b""
                if rest is None:
                    return
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.single_byte_replies += 1
                self.server.sendall(head + rest)
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
            while True:
                head = _recv_exactly(self.client, 5)
                if head is None:
                    return
                kind = head[:1]
                (length,) = struct.unpack("!i", head[1:])
                body = _recv_exactly(self.client, length - 4)
                if body is None:
                    return
                if not (self.swallowing or self.holding) and _is_commit(kind, body):
                    fate = self.proxy._take_commit()
                    if fate == "request":
                        self.proxy._count("requests_lost")
                        return  # never forwarded: the server rolls back on the close
                    self.swallowing = fate == "reply"
                    self.holding = fate == "hold"
                self.server.sendall(head + body)
        except OSError:
            return
        finally:
            self.close()

    def _server_to_client(self) -> None:
        try:
            while True:
                if self.single_byte_replies:
                    byte = _recv_exactly(self.server, 1)
                    if byte is None:
                        return
                    self.single_byte_replies -= 1
                    self.client.sendall(byte)
                    continue
                head = _recv_exactly(self.server, 5)
                if head is None:
                    return
                (length,) = struct.unpack("!i", head[1:])
                body = _recv_exactly(self.server, length - 4)
                if body is None:
                    return
                if self.holding:
                    self.held.append(head + body)
                    if head[:1] == b"Z":
                        # The server finished the COMMIT; the client waits for the answer
                        # until the test lets it through (or cuts the connection).
                        self.proxy._hold(self)
                        if self.closed:
                            return
                        self.client.sendall(b"".join(self.held))
                        self.held, self.holding = [], False
                elif not self.swallowing:
                    self.client.sendall(head + body)
                elif head[:1] == b"Z":
                    # The server finished the COMMIT (and is idle): the client never
                    # hears how it went.
                    self.proxy._count("replies_lost")
                    return
        except OSError:
            return
        finally:
            self.close()


class PgProxy:
    """A proxy on a free 127.0.0.1 port that forwards to PostgreSQL.

    Args:
        host: PostgreSQL's host.
        port: PostgreSQL's port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: list[str] = []  # the fates of the next COMMITs: "reply", "request", "hold"
        self._held = threading.Condition(self._lock)
        self._released = threading.Event()
        self._probability = 0.0
        self._random = random.Random(0)
        self._links: set[_Link] = set()
        self.replies_lost = 0  # COMMITs the server finished and the client never heard of
        self.requests_lost = 0  # COMMITs cut before they reached the server
        self.replies_held = 0  # COMMITs the server finished whose reply was held back
        self.connections_dropped = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """`url` (a SQLAlchemy URL to PostgreSQL) pointed at the proxy, TLS off."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        if parsed.drivername.endswith("asyncpg"):
            parsed = parsed.update_query_dict({"ssl": "disable"})
        else:
            parsed = parsed.update_query_dict({"sslmode": "disable"})
        return parsed.render_as_string(hide_password=False)

    def lose_commit_replies(self, count: int = 1) -> None:
        """Lose the replies to the next `count` COMMITs (any connection)."""
        with self._lock:
            self._armed += ["reply"] * count

    def lose_commits(self, count: int = 1) -> None:
        """Cut the connection instead of forwarding the next `count` COMMITs."""
        with self._lock:
            self._armed += ["request"] * count

    def hold_commit_replies(self, count: int = 1) -> None:
        """Hold back the replies to the next `count` COMMITs until `release` (any connection).

        The server finishes each COMMIT; its answer waits in the proxy, so the client is
        still waiting for it: `wait_for_held_reply` returns once that is the case.
        """
        with self._lock:
            self._released.clear()
            self._armed += ["hold"] * count

    def wait_for_held_reply(self, timeout: float = 30.0) -> None:
        """Wait until the server has finished a COMMIT whose reply is held back."""
        with self._held:
            if not self._held.wait_for(lambda: self.replies_held > 0, timeout):
                raise TimeoutError("no COMMIT reply was held back in time")

    def release(self) -> None:
        """Let the held replies through (the client gets its answer, late)."""
        self._released.set()

    def lose_commit_replies_randomly(self, probability: float, seed: int = 0) -> None:
        """Lose the reply to each COMMIT with `probability` (0 turns it off)."""
        with self._lock:
            self._probability = probability
            self._random = random.Random(seed)

    def disarm(self) -> int:
        """Stop losing replies; returns how many armed losses were left unused."""
        with self._lock:
            left, self._armed, self._probability = len(self._armed), [], 0.0
        self._released.set()
        return left

    def drop_all(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        with self._lock:
            self.connections_dropped += len(links)
        return len(links)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._closed = True
        self._released.set()
        try:
            self._listener.close()
        finally:
            self.drop_all()

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _take_commit(self) -> str | None:
        """What happens to a COMMIT going through: "reply" or "request" lost, its reply
        held ("hold"), or `None`."""
        with self._lock:
            if self._armed:
                return self._armed.pop(0)
            if self._probability and self._random.random() < self._probability:
                return "reply"
            return None

    def _hold(self, link: _Link) -> None:
        """A held reply is complete: count it, then wait for `release` (or a cut)."""
        with self._held:
            self.replies_held += 1
            self._held.notify_all()
        while not (self._released.wait(0.05) or link.closed):
            pass

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                self._links.add(link)
            link.start()
