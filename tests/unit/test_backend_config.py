"""Backend construction, capabilities and signing, with fake credentials and no network.

Every store here is configured with static, made-up credentials: obstore signs URLs
locally from them (pure computation), so nothing in this module opens a connection.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

from sqlalchemy_obstore import (
    ConfigurationError,
    InvalidExpiryError,
    ObstoreBackend,
    StorageError,
    UnsupportedOperationError,
    UnsupportedSchemeError,
)
from sqlalchemy_obstore.errors import redact
from sqlalchemy_obstore.signing import development_signer

AWS_KEY_ID = "AKIAFAKEKEYID0000001"
AWS_SECRET = "fakeSecretAccessKey/With+Symbols0000000001"
AZURE_KEY = "ZmFrZS1henVyZS1hY2NvdW50LWtleS0wMDAwMDAwMDAwMDA="  # base64("fake-azure-...")
SEVEN_DAYS = 7 * 24 * 3600


@pytest.fixture(scope="module")
def service_account() -> dict[str, str]:
    """A throwaway GCS service account: a fresh RSA key that belongs to nobody."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "fake-project",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "uploader@fake-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def pem_body(service_account: dict[str, str]) -> str:
    """A distinctive line of the private key's base64 body."""
    return service_account["private_key"].splitlines()[3]


def s3_config(**extra: Any) -> dict[str, Any]:
    return {
        "region": "eu-west-1",
        "access_key_id": AWS_KEY_ID,
        "secret_access_key": AWS_SECRET,
        **extra,
    }


def azure_config(**extra: Any) -> dict[str, Any]:
    return {"account_name": "fakeaccount", "access_key": AZURE_KEY, **extra}


def make_backend(kind: str, service_account: dict[str, str], tmp_path: Path) -> ObstoreBackend:
    if kind == "s3":
        return ObstoreBackend("s3", "s3://bucket/", **s3_config())
    if kind == "gcs":
        return ObstoreBackend(
            "gcs", "gs://bucket/", service_account_key=json.dumps(service_account)
        )
    if kind == "azure":
        return ObstoreBackend("azure", "az://container/", **azure_config())
    if kind == "local":
        return ObstoreBackend("local", tmp_path / "store")
    return ObstoreBackend("memory", "memory://")


def secrets_of(service_account: dict[str, str]) -> list[str]:
    return [AWS_SECRET, AZURE_KEY, pem_body(service_account), service_account["private_key"]]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# -- URL parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "config", "store_type", "kind", "bucket"),
    [
        ("s3://bucket/", s3_config(), S3Store, "s3", "bucket"),
        ("s3a://bucket/", s3_config(), S3Store, "s3", "bucket"),
        ("s3://bucket", s3_config(), S3Store, "s3", "bucket"),
        ("az://container/", azure_config(), AzureStore, "azure", "container"),
        ("azure://container/", azure_config(), AzureStore, "azure", "container"),
        ("abfs://container/", azure_config(), AzureStore, "azure", "container"),
        (
            "https://fakeaccount.blob.core.windows.net/container",
            {"access_key": AZURE_KEY},
            AzureStore,
            "azure",
            "container",
        ),
    ],
)
def test_cloud_urls(
    url: str, config: dict[str, Any], store_type: type, kind: str, bucket: str
) -> None:
    backend = ObstoreBackend("files", url, **config)
    assert isinstance(backend.store, store_type)
    assert backend.kind == kind
    store_config = backend.store.config  # type: ignore[union-attr]
    assert bucket in (store_config.get("bucket"), store_config.get("container_name"))
    assert backend.supports_signing
    assert backend._static_credentials
    text = repr(backend) + backend.describe()
    assert bucket in text
    assert AWS_SECRET not in text
    assert AZURE_KEY not in text


def test_gcs_url_with_service_account(service_account: dict[str, str]) -> None:
    key_json = json.dumps(service_account)
    backend = ObstoreBackend("gcs", "gs://bucket/", service_account_key=key_json)
    assert isinstance(backend.store, GCSStore)
    assert backend.kind == "gcs"
    assert backend.store.config["bucket"] == "bucket"
    assert backend._static_credentials
    text = repr(backend) + backend.describe()
    assert "bucket" in text
    assert pem_body(service_account) not in text
    assert "private_key" not in text


def test_s3_long_config_names_are_accepted() -> None:
    backend = ObstoreBackend(
        "s3",
        "s3://bucket/",
        aws_region="eu-west-1",
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
    )
    assert backend.store.config["region"] == "eu-west-1"  # type: ignore[union-attr]
    assert backend._static_credentials


def test_s3_without_credentials_is_not_static() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", region="eu-west-1")
    assert backend.kind == "s3"
    assert not backend._static_credentials  # credentials would be fetched at request time


def test_file_url(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    backend = ObstoreBackend("local", f"file://{directory}/")
    assert isinstance(backend.store, LocalStore)
    assert backend.kind == "local"
    assert directory.is_dir()  # created
    backend.put("x/y.txt", b"data")
    assert (directory / "x" / "y.txt").read_bytes() == b"data"


def test_path(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    backend = ObstoreBackend("local", directory)
    assert isinstance(backend.store, LocalStore)
    assert backend.kind == "local"
    assert directory.is_dir()
    backend.put("k.bin", b"1")
    assert (directory / "k.bin").read_bytes() == b"1"


def test_memory_url() -> None:
    backend = ObstoreBackend("memory", "memory://")
    assert isinstance(backend.store, MemoryStore)
    assert backend.kind == "memory"


@pytest.mark.parametrize(
    "store",
    [
        S3Store(
            "bucket", region="eu-west-1", access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET
        ),
        AzureStore("container", account_name="fakeaccount", account_key=AZURE_KEY),
        MemoryStore(),
    ],
    ids=["s3", "azure", "memory"],
)
def test_ready_store(store: Any) -> None:
    backend = ObstoreBackend("ready", store)
    assert backend.store is store
    assert AWS_SECRET not in repr(backend)
    assert AZURE_KEY not in repr(backend)


def test_ready_local_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    backend = ObstoreBackend("ready", store)
    assert backend.store is store
    assert backend.kind == "local"


def test_ready_store_with_config_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ready obstore store"):
        ObstoreBackend("ready", MemoryStore(), region="eu-west-1")


def test_not_a_store_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="int"):
        ObstoreBackend("x", 123)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["memory://", "file:///tmp/never-created-sqlo"])
def test_memory_and_file_take_no_config(url: str) -> None:
    with pytest.raises(ConfigurationError, match="takes no configuration"):
        ObstoreBackend("x", url, region="eu-west-1")


@pytest.mark.parametrize("key", ["", None, 3])
def test_backend_key_must_be_a_non_empty_string(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="non-empty string"):
        ObstoreBackend(key, "memory://")


def test_unknown_checksum_algorithm() -> None:
    with pytest.raises(ConfigurationError, match="checksum algorithm"):
        ObstoreBackend("x", "memory://", checksum_algorithm="nope256")


def test_prefix_is_normalised() -> None:
    assert ObstoreBackend("x", "memory://", prefix="/uploads/docs/").prefix == "uploads/docs"
    assert ObstoreBackend("x", "memory://", prefix="/").prefix is None


def test_public_url() -> None:
    backend = ObstoreBackend("x", "memory://", public_base_url="https://cdn.example.com/files/")
    assert backend.public_url("a b/c#d.txt") == "https://cdn.example.com/files/a%20b/c%23d.txt"
    assert ObstoreBackend("y", "memory://").public_url("a") is None


# -- configuration errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "config"),
    [
        ("s3://bucket/", s3_config(bogus_option="x")),
        ("s3://bucket/", s3_config(not_a_key=AWS_SECRET)),
        ("az://container/", azure_config(bogus_option="x")),
        ("s3://bucket/", s3_config(client_options={"no_such_client_option": AWS_SECRET})),
    ],
)
def test_unknown_config_key(url: str, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        ObstoreBackend("files", url, **config)
    message = str(info.value)
    assert info.value.backend == "files"
    assert "files" in message
    assert AWS_SECRET not in message
    assert AZURE_KEY not in message
    assert AWS_SECRET not in repr(info.value)


def test_unknown_gcs_config_key_does_not_leak_the_service_account(
    service_account: dict[str, str],
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ObstoreBackend(
            "gcs",
            "gs://bucket/",
            service_account_key=json.dumps(service_account),
            bogus_option="x",
        )
    assert pem_body(service_account) not in str(info.value)


def test_broken_service_account_key_does_not_leak_it(service_account: dict[str, str]) -> None:
    broken = dict(service_account)
    lines = broken["private_key"].splitlines()
    broken["private_key"] = "\n".join([*lines[:3], "!!!not base64!!!", *lines[3:]])
    with pytest.raises(ConfigurationError) as info:
        ObstoreBackend("gcs", "gs://bucket/", service_account_key=json.dumps(broken))
    assert pem_body(service_account) not in str(info.value)
    assert "!!!not base64!!!" not in str(info.value)


def test_wrong_value_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        ObstoreBackend("s3", "s3://bucket/", access_key_id=123, secret_access_key=AWS_SECRET)
    assert AWS_SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://host/dir/", "foo", "sftp://host/", "mailto:someone@example.com", "/no/scheme/path"],
)
def test_unsupported_scheme(url: str) -> None:
    with pytest.raises(UnsupportedSchemeError) as info:
        ObstoreBackend("files", url)
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "s3://" in message  # says what would work
    assert "memory://" in message


def test_unsupported_scheme_message_redacts_credentials_in_the_url() -> None:
    with pytest.raises(UnsupportedSchemeError) as info:
        ObstoreBackend("files", "ftp://host/dir/?token=supersecrettoken&sig=abc")
    assert "supersecrettoken" not in str(info.value)
    assert "sig=abc" not in str(info.value)


# -- capabilities --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "signing", "attributes", "max_expiry", "headers"),
    [
        ("s3", True, True, timedelta(days=7), {}),
        ("gcs", True, True, timedelta(days=7), {}),
        ("azure", True, True, None, {"x-ms-blob-type": "BlockBlob"}),
        ("local", False, False, None, {}),
        ("memory", True, True, None, {}),  # through the development signer
    ],
)
def test_capabilities(
    kind: str,
    signing: bool,
    attributes: bool,
    max_expiry: timedelta | None,
    headers: dict[str, str],
    service_account: dict[str, str],
    tmp_path: Path,
) -> None:
    backend = make_backend(kind, service_account, tmp_path)
    assert backend.supports_signing is signing
    assert backend.supports_attributes is attributes
    assert backend.max_sign_expiry == max_expiry
    assert dict(backend.upload_headers) == headers
    text = repr(backend) + backend.describe()
    for secret in secrets_of(service_account):
        assert secret not in text


def test_skip_signature_disables_signing() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", region="eu-west-1", skip_signature=True)
    assert not backend.supports_signing
    with pytest.raises(UnsupportedOperationError):
        backend.sign("a")


def test_skip_signature_false_keeps_signing() -> None:
    # obstore keeps config values as strings, so this reads back as "false".
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config(skip_signature=False))
    assert backend.supports_signing
    assert "X-Amz-Signature=" in backend.sign("a")


def test_azure_use_emulator_false_is_not_static_credentials() -> None:
    backend = ObstoreBackend("az", "az://container/", account_name="acct", use_emulator=False)
    assert not backend._static_credentials


# -- signing -------------------------------------------------------------------------------------
def test_s3_sign_produces_sigv4_url() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    url = backend.sign("docs/report final.pdf", expires_in=600)
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.path.endswith("/docs/report%20final.pdf")
    params = query(url)
    assert params["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert params["X-Amz-Credential"][0].startswith(f"{AWS_KEY_ID}/")
    assert "/eu-west-1/s3/aws4_request" in params["X-Amz-Credential"][0]
    assert params["X-Amz-Expires"] == ["600"]
    assert len(params["X-Amz-Signature"][0]) == 64
    assert AWS_SECRET not in url


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [(1, "1"), (3600, "3600"), (timedelta(minutes=5), "300"), (SEVEN_DAYS, str(SEVEN_DAYS))],
)
def test_s3_sign_expiry(expires_in: int | timedelta, seconds: str) -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    assert query(backend.sign("a", expires_in=expires_in))["X-Amz-Expires"] == [seconds]


def test_s3_sign_put_differs_from_get() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    get = backend.sign("a", method="GET", expires_in=60)
    put = backend.sign("a", method="PUT", expires_in=60)
    assert query(get)["X-Amz-Signature"] != query(put)["X-Amz-Signature"]


def test_s3_sign_batch_in_one_call() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    paths = [f"batch/{i}.bin" for i in range(5)]
    urls = backend.sign(paths, expires_in=120)
    assert isinstance(urls, list)
    assert len(urls) == len(paths)
    for path, url in zip(paths, urls, strict=True):
        assert urlsplit(url).path.endswith(path)
        assert query(url)["X-Amz-Expires"] == ["120"]
        assert "X-Amz-Signature" in query(url)
    assert len({query(u)["X-Amz-Signature"][0] for u in urls}) == len(paths)
    assert backend.sign((p for p in paths[:2]), expires_in=120)[0].startswith("https://")


async def test_s3_sign_async_single_and_batch() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    url = await backend.sign_async("a.txt", expires_in=90)
    assert query(url)["X-Amz-Expires"] == ["90"]
    urls = await backend.sign_async(["a", "b"], expires_in=90)
    assert len(urls) == 2


def test_gcs_sign(service_account: dict[str, str]) -> None:
    backend = ObstoreBackend("gcs", "gs://bucket/", service_account_key=json.dumps(service_account))
    url = backend.sign("img/a.png", expires_in=300)
    params = query(url)
    assert params["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert params["X-Goog-Credential"][0].startswith(service_account["client_email"])
    assert params["X-Goog-Expires"] == ["300"]
    assert "X-Goog-Signature" in params
    urls = backend.sign(["a", "b"], expires_in=300)
    assert len(urls) == 2


async def test_gcs_sign_async(service_account: dict[str, str]) -> None:
    backend = ObstoreBackend("gcs", "gs://bucket/", service_account_key=json.dumps(service_account))
    assert "X-Goog-Signature" in query(await backend.sign_async("a", expires_in=60))


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_azure_sign(sync: bool) -> None:
    backend = ObstoreBackend("azure", "az://container/", **azure_config())
    month = timedelta(days=30)  # Azure has no fixed limit
    if sync:
        get = backend.sign("a.txt", expires_in=60)
        put = backend.sign("a.txt", method="PUT", expires_in=month)
    else:
        get = await backend.sign_async("a.txt", expires_in=60)
        put = await backend.sign_async("a.txt", method="PUT", expires_in=month)
    assert urlsplit(get).netloc == "fakeaccount.blob.core.windows.net"
    assert query(get)["sp"] == ["r"]
    assert "sig" in query(get)
    assert query(put)["sp"] != ["r"]
    assert AZURE_KEY not in get + put


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@pytest.mark.parametrize("too_long", [SEVEN_DAYS + 1, timedelta(days=8), 10**9])
def test_expiry_over_seven_days(
    kind: str, too_long: int | timedelta, service_account: dict[str, str], tmp_path: Path
) -> None:
    backend = make_backend(kind, service_account, tmp_path)
    with pytest.raises(InvalidExpiryError, match="at most 604800 seconds") as info:
        backend.sign("a", expires_in=too_long)
    assert isinstance(info.value, ValueError)
    assert info.value.backend == kind


async def test_expiry_over_seven_days_async() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    with pytest.raises(InvalidExpiryError):
        await backend.sign_async("a", expires_in=timedelta(days=7, seconds=1))


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
@pytest.mark.parametrize("bad", [0, -1, -3600, 0.0, timedelta(0), timedelta(seconds=-5)])
def test_expiry_not_positive(
    kind: str, bad: int | float | timedelta, service_account: dict[str, str], tmp_path: Path
) -> None:
    backend = make_backend(kind, service_account, tmp_path)
    with pytest.raises(InvalidExpiryError, match="positive"):
        backend.sign("a", expires_in=bad)


@pytest.mark.parametrize("bad", ["3600", None, True])
def test_expiry_of_wrong_type(bad: Any) -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    with pytest.raises(InvalidExpiryError, match="seconds or a timedelta"):
        backend.sign("a", expires_in=bad)


def test_check_expiry_returns_timedelta() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    assert backend.check_expiry(90) == timedelta(seconds=90)
    assert backend.check_expiry(timedelta(days=7)) == timedelta(days=7)


@pytest.mark.parametrize("kind", ["local"])
async def test_sign_unsupported_on_local_without_a_signer(
    kind: str, service_account: dict[str, str], tmp_path: Path
) -> None:
    backend = make_backend(kind, service_account, tmp_path)
    for call in (
        lambda: backend.sign("a/b.txt"),
        lambda: backend.sign(["a", "b"]),
    ):
        with pytest.raises(UnsupportedOperationError) as info:
            call()
        message = str(info.value)
        assert "S3" in message
        assert "GCS" in message
        assert "Azure" in message
        assert kind in message
        assert info.value.backend == kind
        assert "signing_secret" in message  # says how to make it sign
    with pytest.raises(UnsupportedOperationError, match="S3"):
        await backend.sign_async("a/b.txt")
    # An expiry problem does not hide the real problem.
    with pytest.raises(UnsupportedOperationError):
        backend.sign("a", expires_in=10**9)


async def test_memory_signs_with_the_development_signer() -> None:
    backend = ObstoreBackend("memory", "memory://")
    assert backend.url_signer is None
    assert backend.supports_signing
    assert not backend.supports_native_signing
    url = backend.sign("a/b.txt", expires_in=60)
    assert url.startswith("/_storage/memory/a/b.txt?")
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    development_signer().verify(
        "memory", "a/b.txt", method="GET", expires=query["expires"], signature=query["signature"]
    )
    assert (await backend.sign_async(["a", "b"], method="PUT"))[1].startswith("/_storage/")


# -- http endpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["endpoint", "aws_endpoint", "endpoint_url"])
def test_http_endpoint_allows_http(name: str) -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config(**{name: "http://127.0.0.1:9000"}))
    assert str(backend.store.client_options["allow_http"]).lower() == "true"  # type: ignore[union-attr]
    # still a signing store; the URL points at the endpoint
    url = backend.sign("a", expires_in=60)
    assert url.startswith("http://127.0.0.1:9000/")


def test_http_endpoint_keeps_other_client_options() -> None:
    backend = ObstoreBackend(
        "s3",
        "s3://bucket/",
        **s3_config(endpoint="http://127.0.0.1:9000", client_options={"timeout": "5s"}),
    )
    options = backend.store.client_options  # type: ignore[union-attr]
    assert str(options["allow_http"]).lower() == "true"
    assert options["timeout"] == "5s"


def test_http_endpoint_respects_explicit_allow_http_false() -> None:
    backend = ObstoreBackend(
        "s3",
        "s3://bucket/",
        **s3_config(endpoint="http://127.0.0.1:9000", client_options={"allow_http": False}),
    )
    assert str(backend.store.client_options["allow_http"]).lower() == "false"  # type: ignore[union-attr]


def test_https_endpoint_does_not_allow_http() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config(endpoint="https://s3.example.com"))
    options = backend.store.client_options or {}  # type: ignore[union-attr]
    assert str(options.get("allow_http", "false")).lower() == "false"


def test_http_azure_endpoint_allows_http() -> None:
    backend = ObstoreBackend(
        "az", "az://container/", **azure_config(endpoint="http://127.0.0.1:10000/fakeaccount")
    )
    assert str(backend.store.client_options["allow_http"]).lower() == "true"  # type: ignore[union-attr]


# -- redaction -----------------------------------------------------------------------------------
def test_redact_s3_signature() -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", **s3_config())
    url = backend.sign("a.txt", expires_in=60)
    signature = query(url)["X-Amz-Signature"][0]
    redacted = redact(f"GET {url} failed: 403")
    assert signature not in redacted
    assert AWS_KEY_ID not in redacted
    assert "X-Amz-Signature=<redacted>" in redacted
    assert "X-Amz-Expires=60" in redacted  # harmless parts stay for debugging
    assert redacted.endswith(" failed: 403")


def test_redact_gcs_signature(service_account: dict[str, str]) -> None:
    backend = ObstoreBackend("gcs", "gs://bucket/", service_account_key=json.dumps(service_account))
    url = backend.sign("a.txt", expires_in=60)
    redacted = redact(url)
    assert query(url)["X-Goog-Signature"][0] not in redacted
    assert "X-Goog-Signature=<redacted>" in redacted


def test_redact_azure_sas() -> None:
    backend = ObstoreBackend("azure", "az://container/", **azure_config())
    url = backend.sign("a.txt", expires_in=60)
    redacted = redact(url)
    sig = query(url)["sig"][0]
    assert sig not in redacted
    assert "sig=<redacted>" in redacted


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("https://b.s3.amazonaws.com/k?X-Amz-Security-Token=SESSIONTOKEN&x=1", "SESSIONTOKEN"),
        ("https://h/p?access_token=BEARERTOKEN", "BEARERTOKEN"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=QUJDREVG==;x=y", "QUJDREVG=="),
        ("SharedAccessSignature=sv=2020&sig=SASSIG;BlobEndpoint=x", "SASSIG"),
        ('S3Config { secret_access_key: "TOPSECRET", region: "x" }', "TOPSECRET"),
        ('{"client_secret": "CLIENTSECRET"}', "CLIENTSECRET"),
        ("session_token=SESSION123 other", "SESSION123"),
        ("-----BEGIN PRIVATE KEY-----\nMIIKEYBODY\n-----END PRIVATE KEY-----", "MIIKEYBODY"),
        ("cut short: -----BEGIN RSA PRIVATE KEY-----\nMIIKEYBODY", "MIIKEYBODY"),
    ],
)
def test_redact_secrets(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_redact_service_account_json(service_account: dict[str, str]) -> None:
    dumped = json.dumps(service_account)
    redacted = redact(f"could not load credentials: {dumped}")
    assert pem_body(service_account) not in redacted
    assert "PRIVATE KEY" not in redacted.replace("<redacted private key>", "")
    assert service_account["client_email"] in redacted  # identifying, not secret


def test_redact_leaves_plain_text_alone() -> None:
    text = "No object at 'a/b.txt' in backend 'uploads'."
    assert redact(text) == text


def test_errors_are_storage_errors() -> None:
    for error in (ConfigurationError, UnsupportedSchemeError, InvalidExpiryError):
        assert issubclass(error, StorageError)


def test_http_endpoint_from_the_environment_allows_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT", "http://127.0.0.1:9")
    backend = ObstoreBackend(
        "env-s3", "s3://bucket/", region="us-east-1", access_key_id="k", secret_access_key="s"
    )
    assert str(backend.store.client_options.get("allow_http")).lower() == "true"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["allow_http", "aws_allow_http"])
def test_http_client_options_are_accepted_as_keywords(name: str) -> None:
    backend = ObstoreBackend("s3", "s3://bucket/", region="us-east-1", **{name: True})
    assert backend.kind == "s3"
    with pytest.raises(ConfigurationError, match="given twice"):
        ObstoreBackend(
            "s3", "s3://b/", region="us-east-1", client_options={"allow_http": True}, **{name: True}
        )


def test_no_obstore_panic_leaves_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    def build(fs: object, config: object) -> None:
        raise panic("Expected config prefix to start with aws_")

    monkeypatch.setattr("sqlalchemy_obstore._stores.build_store", build)
    with pytest.raises(ConfigurationError, match="obstore refused it"):
        ObstoreBackend("s3", "s3://bucket/", region="us-east-1")
