"""Smoke tests for the emulator fixtures, using only raw obstore and httpx.

They prove that each fixture starts its server and hands out everything needed to
build an obstore store and to use signed URLs over plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import obstore
import pytest
from obstore.exceptions import PermissionDeniedError
from obstore.store import AzureStore, GCSStore, S3Store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.servers import AzuriteServer, FakeGcsServer, MotoServer, SeaweedServer

pytest_plugins = ["tests.conftest_servers"]

pytestmark = pytest.mark.integration

HTTP_OK = 200
HTTP_CREATED = 201
HTTP_FORBIDDEN = 403


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    # trust_env=False: never route 127.0.0.1 through a proxy from the environment.
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def _key(name: str) -> str:
    return f"smoke/{uuid.uuid4().hex}/{name}"


def _tamper_query(url: str, param: str) -> str:
    """Change the last character of query parameter ``param`` (a signature)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in query]
    assert param in names, (param, names)
    tampered = [
        (name, (value[:-1] + ("B" if value.endswith("A") else "A")) if name == param else value)
        for name, value in query
    ]
    return urlunsplit(parts._replace(query=urlencode(tampered)))


# --------------------------------------------------------------------------- moto


def test_moto_put_get(moto_server: MotoServer) -> None:
    store = S3Store(
        moto_server.bucket,
        endpoint=moto_server.endpoint,
        access_key_id=moto_server.access_key_id,
        secret_access_key=moto_server.secret_access_key,
        region=moto_server.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    key = _key("hello.txt")
    obstore.put(store, key, b"hello moto")
    assert obstore.get(store, key).bytes() == b"hello moto"
    assert obstore.head(store, key)["size"] == len(b"hello moto")


def test_moto_signed_get(moto_server: MotoServer, http: httpx.Client) -> None:
    store = moto_server.make_store()
    key = _key("signed.bin")
    obstore.put(store, key, b"\x00signed moto\xff")
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))
    assert url.startswith(moto_server.endpoint + "/")
    response = http.get(url)
    assert response.status_code == HTTP_OK, response.text
    assert response.content == b"\x00signed moto\xff"


def test_moto_create_bucket(moto_server: MotoServer) -> None:
    bucket = moto_server.create_bucket()
    store = moto_server.make_store(bucket)
    obstore.put(store, "x.txt", b"extra bucket")
    assert obstore.get(store, "x.txt").bytes() == b"extra bucket"
    with pytest.raises(FileNotFoundError):  # a separate bucket, not a prefix
        obstore.head(moto_server.make_store(), "x.txt")


# --------------------------------------------------------------------------- SeaweedFS


def test_seaweed_put_get(seaweed_server: SeaweedServer) -> None:
    store = S3Store(
        seaweed_server.bucket,
        endpoint=seaweed_server.endpoint,
        access_key_id=seaweed_server.access_key_id,
        secret_access_key=seaweed_server.secret_access_key,
        region=seaweed_server.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    key = _key("hello.txt")
    obstore.put(store, key, b"hello seaweed")
    assert obstore.get(store, key).bytes() == b"hello seaweed"


def test_seaweed_rejects_wrong_secret(seaweed_server: SeaweedServer) -> None:
    store = seaweed_server.make_store(
        secret_access_key="not-the-secret", retry_config={"max_retries": 0}
    )
    with pytest.raises(PermissionDeniedError, match="SignatureDoesNotMatch"):
        obstore.put(store, _key("nope.txt"), b"x")


def test_seaweed_signed_get(seaweed_server: SeaweedServer, http: httpx.Client) -> None:
    store = seaweed_server.make_store()
    key = _key("signed.txt")
    obstore.put(store, key, b"signed seaweed")
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))
    response = http.get(url)
    assert response.status_code == HTTP_OK, response.text
    assert response.content == b"signed seaweed"


def test_seaweed_tampered_signed_url_refused(
    seaweed_server: SeaweedServer, http: httpx.Client
) -> None:
    store = seaweed_server.make_store()
    key = _key("tampered.txt")
    obstore.put(store, key, b"secret")
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))
    response = http.get(_tamper_query(url, "X-Amz-Signature"))
    assert response.status_code == HTTP_FORBIDDEN, response.text


def test_seaweed_expired_signed_url_refused(
    seaweed_server: SeaweedServer, http: httpx.Client
) -> None:
    store = seaweed_server.make_store()
    key = _key("expired.txt")
    obstore.put(store, key, b"short-lived")
    url = obstore.sign(store, "GET", key, timedelta(seconds=1))
    time.sleep(2.1)
    response = http.get(url)
    assert response.status_code == HTTP_FORBIDDEN, response.text
    assert "expired" in response.text.lower()


def test_seaweed_create_bucket(seaweed_server: SeaweedServer) -> None:
    bucket = seaweed_server.create_bucket()
    store = seaweed_server.make_store(bucket)
    obstore.put(store, "x.txt", b"extra bucket")
    assert obstore.get(store, "x.txt").bytes() == b"extra bucket"


# --------------------------------------------------------------------------- Azurite


def test_azurite_put_get_emulator_store(azurite_server: AzuriteServer) -> None:
    store = azurite_server.make_store()  # use_emulator=True, env var set only while building
    key = _key("hello.txt")
    obstore.put(store, key, b"hello azurite")
    assert obstore.get(store, key).bytes() == b"hello azurite"


def test_azurite_put_get_explicit_store(azurite_server: AzuriteServer) -> None:
    store = AzureStore(
        azurite_server.container,
        account_name=azurite_server.account_name,
        account_key=azurite_server.account_key,
        endpoint=azurite_server.endpoint,
        client_options={"allow_http": True},
    )
    key = _key("explicit.txt")
    obstore.put(store, key, b"explicit endpoint")
    assert obstore.get(store, key).bytes() == b"explicit endpoint"


def test_azurite_signed_get(azurite_server: AzuriteServer, http: httpx.Client) -> None:
    store = azurite_server.make_store()
    key = _key("signed.txt")
    obstore.put(store, key, b"signed azurite")
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))
    assert url.startswith(azurite_server.endpoint + "/")
    response = http.get(url)
    assert response.status_code == HTTP_OK, response.text
    assert response.content == b"signed azurite"


def test_azurite_tampered_sas_refused(azurite_server: AzuriteServer, http: httpx.Client) -> None:
    store = azurite_server.make_store()
    key = _key("tampered.txt")
    obstore.put(store, key, b"secret")
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))
    response = http.get(_tamper_query(url, "sig"))
    assert response.status_code == HTTP_FORBIDDEN, response.text


def test_azurite_signed_put(azurite_server: AzuriteServer, http: httpx.Client) -> None:
    store = azurite_server.make_store()
    key = _key("uploaded.bin")
    url = obstore.sign(store, "PUT", key, timedelta(minutes=5))
    response = http.put(url, content=b"via SAS", headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == HTTP_CREATED, response.text
    assert obstore.get(store, key).bytes() == b"via SAS"


def test_azurite_create_container(azurite_server: AzuriteServer) -> None:
    container = azurite_server.create_container()
    store = azurite_server.make_store(container)
    obstore.put(store, "x.txt", b"extra container")
    assert obstore.get(store, "x.txt").bytes() == b"extra container"


# --------------------------------------------------------------------------- fake-gcs-server


def _gcs_store(server: FakeGcsServer) -> GCSStore:
    return GCSStore(
        server.bucket,
        service_account_key=server.service_account_json(),
        client_options={"allow_http": True},
    )


def test_fake_gcs_seeded_object_readable(fake_gcs_server: FakeGcsServer) -> None:
    key = _key("seeded.csv")
    fake_gcs_server.seed(key, b"a,b\n1,2\n", content_type="text/csv", metadata={"k": "v"})
    store = _gcs_store(fake_gcs_server)
    result = obstore.get(store, key)
    assert result.bytes() == b"a,b\n1,2\n"
    assert result.attributes.get("Content-Type") == "text/csv"
    assert result.attributes.get("k") == "v"
    assert obstore.head(store, key)["size"] == len(b"a,b\n1,2\n")
    folder = key.rsplit("/", 1)[0]  # obstore prefixes are whole path segments
    listed = [meta["path"] for batch in obstore.list(store, prefix=folder) for meta in batch]
    assert listed == [key]


def test_fake_gcs_signed_get(fake_gcs_server: FakeGcsServer, http: httpx.Client) -> None:
    key = _key("signed.bin")
    fake_gcs_server.seed(key, b"signed gcs")
    store = fake_gcs_server.make_store()
    url = obstore.sign(store, "GET", key, timedelta(minutes=5))  # signed locally (RSA key)
    assert url.startswith(fake_gcs_server.endpoint + "/")
    assert "X-Goog-Signature=" in url
    response = http.get(url)
    assert response.status_code == HTTP_OK, response.text
    assert response.content == b"signed gcs"
