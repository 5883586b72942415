"""CloudFront signed URLs: the documented algorithm, AWS's own vectors, and the backend wiring.

Every URL is checked by `tests/cloudfront_viewer.py`, an independent rebuild of what
CloudFront does with a signed URL (signature with the public key, resource, dates, IP).
The signer's output is also compared with the AWS CLI's published test vectors.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    UnsupportedOperationError,
    sign_files,
    sign_files_async,
    storages,
)
from sqlalchemy_obstore.cloudfront import RESERVED_PARAMETERS, CloudFrontSigner
from sqlalchemy_obstore.errors import (
    ConfigurationError,
    InvalidExpiryError,
    StorageError,
    redact,
    redact_url,
)
from sqlalchemy_obstore.signing import HmacUrlSigner
from tests.cloudfront_viewer import Refused, check, unb64

CDN = "https://d111111abcdef8.cloudfront.net"
KEY_ID = "K2JCJMDEHXQW5F"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, pkcs8: bool = True) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def query(url: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in urlsplit(url).query.split("&"))


# -- AWS's published vectors -------------------------------------------------------------------
# From the AWS CLI's functional tests of `aws cloudfront sign`
# (tests/functional/cloudfront/test_sign.py, Apache-2.0): test-only keys in PKCS#1 and
# PKCS#8 form, the URL http://example.com/hi, --date-less-than 2016-1-1 (1451606400),
# --key-pair-id my_id, and for the custom policy --ip-address 12.34.56.78. RSA PKCS#1 v1.5
# signatures are deterministic, so the signer must reproduce them byte for byte (SHA-1,
# the CLI's algorithm).
AWS_CLI_PKCS1_KEY = """-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAu6o2+Jc8UINw2P/w2l7A1xXu3emQEZQ9diA3bmog8r9Dg+65
fZgAqmuNWPqBivv7j3DGnLUdt8uCIr7PYUbK7wDa6n7U3ryOWtO2ZTc3StiJVcqT
sokZ0qxGFtDRafjBuydXtcxh52vVTcHqH33nubyyZIzuhTwfmrIOnUXnLwbMrBBP
bg/8mlgQooyo1XbrN1eO4XMs+UgQ9Mqc7KRJRinUJ+KYuCnM8f/nN4RjYdjTcghk
xCPEHCeSt2luywWyYmfguWCBS2Mu1q0250wKyNazlgiiTJtAuuSeweb4NKPOJL9X
hR6Ce6UuU4WYlli8gvQh3FAV3N3C1Rxo20k28QIDAQABAoIBAQCUEkP5dWrzpCJg
NeHWizjg/L9SfT1dgXfVQqo6BqckoeElsjDNdifgT6hhcpbQEO52SWeMsiNWp85w
l9mNSYxJdIVGzPgtHt27sJyT1DNebOg/tu0+y4qCfcd3rR/u24YQo4RDP5ZoQN82
0TBn1LIIDWk8iS6SFdRh/OgnE8bLhNbK9IfZQFEEJrFkArrn/le/ro2mfJkC/imo
QvqKmM0dGBXt5SCDSbUQAzKtEcR/4gf/qSjFe2YAwAvSA05WXMH6szdtx6/H/VbK
Uck/WwTHvGObQDFEWmICxPK9AWT0qaFNjlUsi3bjQRdIlYYrXe+6nVMB/Jp1awq7
tGBqIcWBAoGBAPtXCNuoQhKXqkjJgteQpB+wFav12XRZgpOciYdeviJrgWydpOOu
O9wkiRUctUijRJbUuWCJF7SgYGoT2xTTp/COiOReqs7qXLMuuXCZcPKkMRJj5wmo
Uc2AwUV/o3+PNz1NFK+2RgciXplac7qugIyuxIvBKuVFTBlCg0+if/0pAoGBAL8k
845wKqOeiawwle/o9lKLGPy1T11GrE6l1A5jRuE1WTVM77jRrb0Hmo0mdfHaf5A0
EjXGIX/fjcmQzBrEd78eCUsvI2Bgn6xXwhd4TTyWHGZfoQjFqAGkixuLN1oo2h1g
bRreFKfAubFP8MC93z23vnH6tdY2VIA4h5ehUFyJAoGAJqxJrKLDJ+E2TmTTQR/8
YPPTIdZ+UyzCrrvTXYTydJFeJLxM9suEYmcswJbePgMBNsQckgIGJ8DVlPzhJN88
ZANKhPkcByKAiQGTfwPdITiqZE4C6rV/gMNi+bKeEa6TrVcC69Z8B/T94VLNo9fd
58esbmSWmRiEkQ5u7f3u+6ECgYA8+6ANCLJB43nPCu07TpsP+LrvHTWF799XdEa0
lG3vuiKNA8/TqmoAziU79VJZ6Dkcm9BXga/8aSmGboD/5UDDI+UZLJ/fxtQKmzEc
ZdBWjRnge5AYCV+xrnqHPiJZzIDSMIp+sO3sG2vjKzsHc0x/F1lWagOLpWfORLrV
4KyP6QKBgAafeSrfK3LM7idiCBuxckLCgFoHa7uXLUNJRS5iIU+bbZLPj2ozu/tk
U0jp7sNk1CyMWI36lR3sujkSyH3lPIXVgrXMuGY3PJRGntN8WlWEsw4VUMGRj3h4
5rB+y/UOS+nlEwQ6eOS09GByJDEXOXpcwjFcTr/f7V8mi0jH+gY/
-----END RSA PRIVATE KEY-----
"""
AWS_CLI_PKCS8_KEY = """-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDiVR5JIogE3iKq
buYalyKO3vmRnOxf7OU6/8WPma8wpWltb4d67HRBxeUvNugGq0uwinoPDfwF74zG
hOKeGrDPLVAbekPzYv1SnB/ppy+nvojDew72xgW56ii9X+Jk83f0TGNTmC7sBvcc
kqz3T/aX23NU0faCW5bl6fiW+HVUHZe/aE4nHqhorHiDXlvTV6wpjEWS6Xyf7ll+
Jvf4eXg7GqTGTGKsB0jE/xPKdVbnQD67fkJOdaAKTQKanY1UF2SS5Nx6NcBxbcCR
Va4myn1JOeQDyHcIXb4NmBx3m21eJSotrJYmD9LTs16mB4wi21lvimALwKxZHjvV
p58xKyyJAgMBAAECggEAFtKPdb96KMd/hmEdaeQAk5iPYOwKd9fK+6qL8OGF5Wlg
mqzq4+3RAUrjw+GM/xMp1Dj6euclmTGhJ+mBcoDtgE6o68Rl8rZyJfDhVO3LY+ZW
IyQXC7JHJIqkpgfzq8tTNrq3L1hCrwE6zNJLh7qz+nciB5UOfvGeYzu3Gf4e0qbi
rlStPa7Gi4Oc0EO/51YRjU3IpXjFRvcsqBtV95XA96hPo2ice0KMcrWPF9Kai8bQ
0sE+wv+YbgIsbwmnHntdd7Sfxx2jPjXeEgh/ncoXCMYfQueSAHQ/EQBWkofhUeB5
oEuQlS5b3D1t3aSKr2o7vrMtu1UWhabu0u+Db/r6gQKBgQD7DKJk0Ow2JBaoM7vV
UucuLWLaY4MG4a1YDlHPl6zmD1OioKrQw2h/m2SalYfxM8BjPbR9eesyDv55HQnR
ptC1SBNxH7dCwWqCeD1jNVoJP8VkBDPRiNaLz68wYkrtfiXCa0DYbewbdrEFDaIk
IErrRzxSWTSNE8Y1YA3ka6MiaQKBgQDmy7TdLa0tyYwY30DmLmS4WUZglJZKrT/0
d9UTz7KJek7P9BNZAe8yotVrxO2di+8W85GAVQBexeISrEW6ZK6GHGz949fJmbvq
QOU/6TgE01AL0nUZF2QKbdAleonlR/WB9IpZTQf/ZI1HmUV0QL3nCrs9OoFbzx4E
GfjbCmQ1IQKBgFOlZgZJRirT42ivtAnj0XslTCaPuXx1fRg1zTRpyQXuXWN2PPPJ
5+t8jwyifeTz5UorqROVp7PKIyefcUIVXrzIAxJSCvGHGEHYZjvD7vfd85rbe5h5
C2MSE8D/Pw/aVCJvMe/q0Bxmc5zHahq3V78EwSh+6G+JAyWNl5Nf+b7hAoGBAM1Z
PGB7DpYpuLw8j9r+NmGMFUFDk4F4KupSYMTSzPDjYRJIAZr1TKWKGkhcHGtMIXwT
VUeQ2dZ5TM/+dcAFav8qdZNk0Q+v+HHSMeeuk0g/1/3c0JF1rW5WDJf8MotNflSV
hy8zicUj60xkRFbOb+kNNFGjJ4vPec5+aVxDH6vhAoGBAI3RsJZXYUL9PhakrsVp
71N+JbNxvw8L9b2VL6ecLNMtPcG5ddFaMhc+kQZap6vAZXauft1fzvAO3fMKNJXm
yvtM2CEYzVd8lFqA8xETa/FgelkFjB5gkiq4EDIuX6mFStkskKUfRHHrb0ATKHSl
YvT60qFc4be2Mfyzt+CuGhYi
-----END PRIVATE KEY-----
"""
AWS_CLI_VECTORS = [
    pytest.param(
        AWS_CLI_PKCS1_KEY,
        None,
        "UiEmtMsInU-gXoa1O7-bTRJmZ~ocphB0ONMxyEHs2r8Y9dwzeB~DkbgzPMX3jbdb"
        "wIwVX3f4VcY4HBLdPSkbF~D6KbUlxPw1ju8mlXeu2C436XxZdrJrrJaiEDaTpKsl"
        "Xpn9ngaCzVfCVPfkC3a0NBWBySi5ezCG2yzb0c-djNgI1wkogwtmtZuOxAoKF1sR"
        "TyFX9ZitUiUIl~65nkJ94s~GGwxzTf1kMi7Wdm~9rFrJpx0O7nJEBy5O578s2UHr"
        "ejtwyedUR5BqXTkgu~A51NcjAN9LErATV7SVBYicoZ76AOfB-TKay7g6-MWCK6-T"
        "-4Q5x6XH4yzII3JpbCmVwA__",
        id="pkcs1-canned",
    ),
    pytest.param(
        AWS_CLI_PKCS1_KEY,
        "12.34.56.78",
        "Vw-WG18WJJXim7YSGWS-zW~XmFB9MjCDOvgC~2Gz-1wiMQzCrXzYYbSE7-aF6JGO"
        "Ob5ewArpMqmu2g5mohnqgieZX1NY6IOteDoXYgqaNj1DafHWQD6UJ3IKVfkxISU9"
        "OmFPoG7H~VSPWEzOxdjOqdIPvAU2pW2mJ5oWu2aL62s0VVtLGCAm-DahiSQisl0J"
        "bzpPyG1pofvPbT75qc71r9uiqSAbPjUF5nmLCZazVnFjDkj3zIgMRYa5aV54VDa6"
        "-wEizzmjQ3-m6UMoYgcGHQXEjoFIWTfpZvbZBYkmK9lk3d16cgvaHafTJ-CPegn1"
        "bKxfgNEjSAoPWS0OvBkRmg__",
        id="pkcs1-custom-ip",
    ),
    pytest.param(
        AWS_CLI_PKCS8_KEY,
        None,
        "cIOcUXezjLknta66EiRX7rk3viXv20F01OwZa1X2QWxhnWnBVno~mg0Gcyfzvfgo"
        "-oXCvZC3bdsfTJXiBcnC1XyxCxBa03bouAae4A0ajP4ey~TKKwPHikOmu2Rc1NEu"
        "-c6wr8DbMZrm~1WIWG4kFG1jhSRoEk2W82NkGEh4xEPq3gaNjQPfF7zIAwcZUUkg"
        "GkIbT-cQ5UZ6rTqTiFGdXD2z8kjulgmtu8Quo6hplch~9ltmKTOt9blswd6hMfCM"
        "NJ~tUj77j8fz968adb9w43jBtl~~5seb8ys01cg5IGWV44LKMWaLmEgzWQAjg-Jg"
        "9wx-HYwuqH4Klds03WZzRQ__",
        id="pkcs8-canned",
    ),
    pytest.param(
        AWS_CLI_PKCS8_KEY,
        "12.34.56.78",
        "beEwE8ZmSX71e79a5dxupiE0zHxahe1IFzuTExKxV0InQnKFlT0wj0tardAlGKFL"
        "LdX9HMGiVjIjvMBdUZQJ-9mMXBtFsQ5nLDEoRH29H8AATzaf4Nx4n29XtVp-jPVF"
        "GFtmdaGJedjJRMV-IzBQcJ19VPl3R8t3Fp~8eP9-P8KpvkJXH2UvJ2H8nMBt2Ogv"
        "brCT2hl~91UtEOgmxeA6twWNpziH0uEdpDOHgnYer5ScdFoo02rPjRXIqPuQcjwP"
        "T2wu~A5T~zomcghjMcIdLeJeS9nscTkjON69xBB-t4lclK3mfzsXTumcx-FzLgOB"
        "bP2Z1d~ZU6X0rkeL~w1BlQ__",
        id="pkcs8-custom-ip",
    ),
]


@pytest.mark.parametrize(("key", "ip_range", "signature"), AWS_CLI_VECTORS)
def test_reproduces_the_aws_cli_vectors(key: str, ip_range: str | None, signature: str) -> None:
    signer = CloudFrontSigner("http://example.com", "my_id", key, hash_algorithm="SHA1")
    url = signer.sign("http://example.com/hi", expires_at=1451606400, ip_range=ip_range)
    params = query(url)
    assert params["Signature"] == signature
    assert params["Key-Pair-Id"] == "my_id"
    assert "Hash-Algorithm" not in params  # SHA-1 is CloudFront's default: not named
    if ip_range is None:
        assert url.startswith("http://example.com/hi?Expires=1451606400&Signature=")
    else:
        assert unb64(params["Policy"]) == (
            b'{"Statement":[{"Resource":"http://example.com/hi","Condition":'
            b'{"DateLessThan":{"AWS:EpochTime":1451606400},'
            b'"IpAddress":{"AWS:SourceIp":"12.34.56.78/32"}}}]}'
        )
    public = serialization.load_pem_private_key(key.encode(), None).public_key()
    check(url, {"my_id": public}, now=1451606399, viewer_ip=ip_range or "192.0.2.1")
    with pytest.raises(Refused, match="expired"):
        check(url, {"my_id": public}, now=1451606400, viewer_ip=ip_range or "192.0.2.1")


# -- the documented algorithm, round trip with the public key -----------------------------------
@pytest.mark.parametrize("algorithm", ["SHA256", "SHA1"])
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_signed_urls_verify_with_the_public_key(
    kind: str,
    algorithm: str,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    key = rsa_key if kind == "rsa" else ec_key
    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    signer = CloudFrontSigner(CDN, KEY_ID, pem(key), hash_algorithm=algorithm)
    keys = {KEY_ID: key.public_key()}
    path = "docs/1f2e/a b+c=d&e ü*?%.pdf"
    url = signer.sign_path(path, expires_in=300)
    now = time.time()
    statement = check(url, keys, now=now)
    assert statement["Resource"] == url.split("?")[0]
    assert unquote(urlsplit(url).path) == f"/{path}"
    # An HTTP client sends the path exactly as signed (no re-encoding, no normalisation).
    assert httpx.URL(url).raw_path.decode().split("?")[0] == urlsplit(url).path
    assert ("Hash-Algorithm" in query(url)) is (algorithm == "SHA256")
    assert "Policy" not in query(url)  # canned: CloudFront rebuilds the policy

    expires = int(query(url)["Expires"])
    assert now + 300 <= expires <= now + 302
    with pytest.raises(Refused, match="expired"):
        check(url, keys, now=expires)
    for tampered in (
        url.replace(f"Expires={expires}", f"Expires={expires + 3600}"),
        url.replace("a%20b", "a%20c"),
        url.replace(f"Hash-Algorithm={algorithm}", "Hash-Algorithm=SHA1")
        if algorithm == "SHA256"
        else url + "&Hash-Algorithm=SHA256",
    ):
        with pytest.raises(Refused):
            check(tampered, keys, now=now)
    with pytest.raises(Refused, match="signature"):
        check(url, {KEY_ID: other.public_key()}, now=now)


def test_custom_policy_ip_range_and_start(ec_key: ec.EllipticCurvePrivateKey) -> None:
    signer = CloudFrontSigner(CDN, KEY_ID, ec_key)
    keys = {KEY_ID: ec_key.public_key()}
    starts = datetime.now(timezone.utc) + timedelta(minutes=10)
    url = signer.sign_path(
        "videos/42/intro.mp4", expires_in=3600, ip_range="203.0.113.0/24", starts_at=starts
    )
    statement = check(url, keys, now=starts.timestamp() + 1, viewer_ip="203.0.113.99")
    assert statement["Resource"] == f"{CDN}/videos/42/intro.mp4"
    assert statement["Condition"]["IpAddress"] == {"AWS:SourceIp": "203.0.113.0/24"}
    assert statement["Condition"]["DateGreaterThan"]["AWS:EpochTime"] >= starts.timestamp()
    with pytest.raises(Refused, match="not valid yet"):
        check(url, keys, now=time.time(), viewer_ip="203.0.113.99")
    with pytest.raises(Refused, match="outside"):
        check(url, keys, now=starts.timestamp() + 1, viewer_ip="198.51.100.7")
    # IPv6, a single address: a /128 range
    six = signer.sign_path("videos/42/intro.mp4", expires_in=60, ip_range="2001:db8::7")
    assert check(six, keys, now=time.time(), viewer_ip="2001:db8::7")["Condition"]["IpAddress"] == {
        "AWS:SourceIp": "2001:db8::7/128"
    }
    # A signer-wide range applies to the URLs a backend asks for, too.
    office = CloudFrontSigner(CDN, KEY_ID, ec_key, ip_range="192.0.2.0/24")
    backend_url = office.sign_url("media", "a.txt", method="GET", expires_in=timedelta(minutes=5))
    assert "Policy=" in backend_url
    check(backend_url, keys, now=time.time(), viewer_ip="192.0.2.200")
    with pytest.raises(Refused, match="outside"):
        check(backend_url, keys, now=time.time(), viewer_ip="192.0.3.1")


def test_wildcard_prefix_signs_every_object_below_it(ec_key: ec.EllipticCurvePrivateKey) -> None:
    signer = CloudFrontSigner(f"{CDN}/media/", KEY_ID, ec_key)
    keys = {KEY_ID: ec_key.public_key()}
    grant = signer.sign_prefix("videos/42/", expires_in=600)
    assert grant.startswith("Policy=")
    now = time.time()
    for key in ("videos/42/master.m3u8", "videos/42/720p/segment 0001.ts"):
        statement = check(f"{signer.object_url(key)}?{grant}", keys, now=now)
        assert statement["Resource"] == f"{CDN}/media/videos/42/*"
    for outside in ("videos/43/master.m3u8", "videos/4/x"):
        with pytest.raises(Refused, match="does not match"):
            check(f"{signer.object_url(outside)}?{grant}", keys, now=now)
    # `*` and `?` in a key are percent-encoded: never wildcards of a policy
    assert signer.object_url("a*b?c") == f"{CDN}/media/a%2Ab%3Fc"
    everything = signer.sign_prefix(expires_in=60)
    check(f"{signer.object_url('any/key.bin')}?{everything}", keys, now=now)


def test_sign_takes_any_url_and_a_resource_pattern(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = CloudFrontSigner(CDN, KEY_ID, rsa_key)
    keys = {KEY_ID: rsa_key.public_key()}
    deadline = datetime.now(timezone.utc) + timedelta(hours=1, microseconds=700_000)
    own_query = signer.sign(f"{CDN}/img/a.png?w=200&fmt=webp", expires_at=deadline)
    assert own_query.startswith(f"{CDN}/img/a.png?w=200&fmt=webp&Expires=")
    assert int(query(own_query)["Expires"]) == int(deadline.timestamp())  # rounded down
    check(own_query, keys, now=time.time())
    pattern = signer.sign(f"{CDN}/img/b.png", expires_at=deadline, resource=f"{CDN}/img/*.png")
    check(pattern, keys, now=time.time())
    for bad in (
        f"{CDN}/a.txt?Expires=1",
        f"{CDN}/a.txt?x=1&Signature=abc",
        f"{CDN}/ü.txt",
        f"{CDN}/a b.txt",
        f"{CDN}/a.txt#top",
        "ftp://cdn.example.com/a.txt",
    ):
        with pytest.raises(ConfigurationError):
            signer.sign(bad, expires_at=deadline)
    assert {
        "Expires",
        "Policy",
        "Signature",
        "Key-Pair-Id",
        "Hash-Algorithm",
    } == RESERVED_PARAMETERS
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        signer.sign(f"{CDN}/a.txt", expires_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidExpiryError, match="before it becomes valid"):
        signer.sign(f"{CDN}/a.txt", expires_at=2_000_000_000, starts_at=2_000_000_000)


def test_lifetimes_and_methods(ec_key: ec.EllipticCurvePrivateKey) -> None:
    signer = CloudFrontSigner(CDN, KEY_ID, ec_key, max_expires_in=timedelta(hours=1))
    assert signer.sign_url("b", "k.txt", method="HEAD", expires_in=timedelta(hours=1))
    for bad in (0, -1, timedelta(hours=1, seconds=1), 3601):
        with pytest.raises(InvalidExpiryError):
            signer.sign_path("k.txt", expires_in=bad)
    with pytest.raises(InvalidExpiryError, match="max_expires_in"):
        signer.sign_url("b", "k.txt", method="GET", expires_in=timedelta(days=1))
    for method in ("PUT", "DELETE", "POST"):
        with pytest.raises(UnsupportedOperationError, match="names no method") as info:
            signer.sign_url("b", "k.txt", method=method, expires_in=timedelta(minutes=1))
        assert (info.value.backend, info.value.path) == ("b", "k.txt")
    for key in ("", "/abs", "a/../b", "a//b", "a\nb"):
        with pytest.raises(ConfigurationError):
            signer.object_url(key)


def test_configuration_is_checked_and_the_key_never_shows(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    text = pem(rsa_key).decode()
    signer = CloudFrontSigner(CDN, KEY_ID, text)
    assert repr(signer) == (
        f"CloudFrontSigner(base_url={CDN!r}, key_pair_id={KEY_ID!r}, hash_algorithm='SHA256')"
    )
    # PKCS#1 and SEC 1 PEM, key objects, encrypted PEM with its password
    CloudFrontSigner(CDN, KEY_ID, pem(rsa_key, pkcs8=False))
    CloudFrontSigner(CDN, KEY_ID, pem(ec_key, pkcs8=False))
    encrypted = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    CloudFrontSigner(CDN, KEY_ID, encrypted, password=b"pw")
    refusals: list[tuple[object, dict[str, object], str]] = [
        (encrypted, {}, "could not be read"),
        (encrypted, {"password": b"wrong"}, "could not be read"),
        (text.replace("MII", "XYZ"), {}, "could not be read"),
        (str(tmp_path / "cloudfront.pem"), {}, "read_bytes"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), {}, "1024-bit"),
        (ec.generate_private_key(ec.SECP384R1()), {}, "P-256"),
        (ed25519.Ed25519PrivateKey.generate(), {}, "RSA or ECDSA"),
        (text, {"hash_algorithm": "MD5"}, "hash_algorithm"),
        (text, {"ip_range": "192.0.2.5/24"}, "no host bits"),
        (text, {"max_expires_in": timedelta(0)}, "max_expires_in"),
    ]
    for key, options, message in refusals:
        with pytest.raises(ConfigurationError, match=message) as info:
            CloudFrontSigner(CDN, KEY_ID, key, **options)
        assert "-----BEGIN" not in str(info.value)
        assert text.splitlines()[2] not in str(info.value)
    for base_url in ("cdn.example.com", f"{CDN}/a?x=1", f"{CDN}/*", "s3://bucket/"):
        with pytest.raises(ConfigurationError, match="base_url"):
            CloudFrontSigner(base_url, KEY_ID, text)
    for key_id in ("", "K 1", "K&Signature=x"):
        with pytest.raises(ConfigurationError, match="key_pair_id"):
            CloudFrontSigner(CDN, key_id, text)


def test_signatures_and_policies_are_redacted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    signer = CloudFrontSigner(CDN, KEY_ID, ec_key)
    canned = signer.sign_path("a.txt", expires_in=60)
    custom = signer.sign_path("a.txt", expires_in=60, ip_range="203.0.113.7")
    for url in (canned, custom):
        params = query(url)
        secret = [params["Signature"], *([params["Policy"]] if "Policy" in params else [])]
        for shown in (redact(f"GET {url} failed"), redact_url(url), str(StorageError(url))):
            assert all(value not in shown for value in secret), shown
            assert "Signature=<redacted>" in shown
    assert "Policy=<redacted>" in redact(custom)
    cookie = "Cookie: CloudFront-Policy=eyJTdGF0; CloudFront-Signature=abc~def; x=1"
    assert redact(cookie) == (
        "Cookie: CloudFront-Policy=<redacted> CloudFront-Signature=<redacted> x=1"
    )
    # prose that says policy= is left alone
    assert redact("StoredObject(policy=...) takes an UploadPolicy") == (
        "StoredObject(policy=...) takes an UploadPolicy"
    )


# -- the backend: downloads through the read signer, uploads through the store -----------------
def test_memory_backend_reads_through_the_cdn_and_uploads_through_its_signer(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    cdn = CloudFrontSigner(CDN, KEY_ID, ec_key)
    hmac = HmacUrlSigner("s" * 32, base_url="https://app.example.com/_storage")
    backend = ObstoreBackend("media", "memory://", url_signer=hmac, read_signer=cdn)
    assert backend.read_signer is cdn
    assert f"read_signer={cdn!r}" in repr(backend)
    keys = {KEY_ID: ec_key.public_key()}
    with storages.temporary(backend):
        file = FileObject(filename="a b.txt", content=b"hi", backend="media").save()
        url = file.sign(expires_in=300)
        assert url.startswith(f"{CDN}/")
        check(url, keys, now=time.time())
        assert file.sign(expires_in=300) == url  # the file's URL cache works unchanged
        assert sign_files([file], expires_in=300) == [url]
        other = FileObject(backend="media", path=file.path)
        assert sign_files([other], expires_in=120)[0].startswith(f"{CDN}/")
        head = backend.sign(file.path, method="HEAD", expires_in=60)
        check(head, keys, now=time.time())
        upload = FileObject(filename="new.txt", backend="media").sign_upload(expires_in=60)
        assert upload.url.startswith("https://app.example.com/_storage/media/")
        assert backend.sign([file.path], method="PUT", expires_in=60)[0].startswith(
            "https://app.example.com/"
        )


async def test_async_paths_sign_downloads_through_the_cdn(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    cdn = CloudFrontSigner(CDN, KEY_ID, ec_key)
    backend = ObstoreBackend("media", "memory://", read_signer=cdn)
    keys = {KEY_ID: ec_key.public_key()}
    with storages.temporary(backend):
        file = await FileObject(filename="a.txt", content=b"hi", backend="media").save_async()
        url = await file.sign_async(expires_in=300)
        check(url, keys, now=time.time())
        assert (await sign_files_async([file], expires_in=300)) == [url]
        urls = await backend.sign_async([file.path, file.path], expires_in=60)
        for each in urls:
            check(each, keys, now=time.time())
        # memory uploads still sign with the development signer (HMAC route)
        put = await backend.sign_async(file.path, method="PUT", expires_in=60)
        assert put.startswith("/_storage/media/")


def test_a_store_that_cannot_sign_signs_downloads_only(
    ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    cdn = CloudFrontSigner(CDN, KEY_ID, ec_key)
    backend = ObstoreBackend("files", tmp_path, read_signer=cdn)
    assert backend.supports_signing
    assert not backend.supports_native_signing
    backend.put("a.txt", b"x")
    check(backend.sign("a.txt", expires_in=60), {KEY_ID: ec_key.public_key()}, now=time.time())
    with pytest.raises(UnsupportedOperationError, match="HmacUrlSigner"):
        backend.sign("a.txt", method="PUT", expires_in=60)
    with storages.temporary(backend), pytest.raises(UnsupportedOperationError):
        FileObject(filename="u.txt", backend="files").sign_upload(expires_in=60)


def test_lifetimes_follow_the_signer_of_each_method(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """S3 limits its URLs to 7 days; a read signer may allow more, or less, for downloads."""
    s3 = {
        "region": "eu-west-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    }
    long_cdn = CloudFrontSigner(CDN, KEY_ID, ec_key, max_expires_in=timedelta(days=30))
    backend = ObstoreBackend("media", "s3://bucket/", read_signer=long_cdn, **s3)
    assert backend.max_sign_expiry == timedelta(days=30)  # the longer of the two
    assert backend.sign("k.txt", expires_in=timedelta(days=20)).startswith(CDN)
    with pytest.raises(InvalidExpiryError, match=r"upload URL .* 604800 seconds"):
        backend.sign("k.txt", method="PUT", expires_in=timedelta(days=20))
    assert "X-Amz-Signature=" in backend.sign("k.txt", method="PUT", expires_in=timedelta(days=7))
    with pytest.raises(InvalidExpiryError):
        backend.sign("k.txt", expires_in=timedelta(days=31))

    short_cdn = CloudFrontSigner(CDN, KEY_ID, ec_key, max_expires_in=timedelta(hours=1))
    backend.read_signer = short_cdn  # takes effect at once, cached lifetimes included
    assert backend.max_sign_expiry == timedelta(days=7)
    with storages.temporary(backend):
        upload = FileObject(filename="u.txt", backend="media")
        signed = upload.sign_upload(expires_in=7200)  # longer than the CDN allows: fine
        assert "X-Amz-Expires=7200" in signed.url
        stored = FileObject(backend="media", path="k.txt")
        with pytest.raises(InvalidExpiryError, match=r"download URL .* 3600 seconds"):
            stored.sign(expires_in=7200)
        assert stored.sign(expires_in=3600).startswith(CDN)

    backend.read_signer = None  # back to the store for every method
    assert backend.max_sign_expiry == timedelta(days=7)
    assert "X-Amz-Signature=" in backend.sign("k.txt", expires_in=60)
    assert "read_signer" not in repr(backend)
    with pytest.raises(ConfigurationError, match="read_signer must be a UrlSigner"):
        backend.read_signer = "https://cdn.example.com"


def test_memory_stand_ins_do_not_sign_for_the_real_cdn(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """Tests that replace a production backend with memory never hand out CDN URLs."""
    from sqlalchemy_obstore.testing import memory_stand_in

    cdn = CloudFrontSigner(CDN, KEY_ID, ec_key)
    production = ObstoreBackend(
        "media", "s3://bucket/", region="eu-west-1", skip_signature=True, read_signer=cdn
    )
    stand_in = memory_stand_in(production)
    assert stand_in.read_signer is None
    with storages.temporary(stand_in):
        file = FileObject(filename="a.txt", content=b"hi", backend="media").save()
        assert file.sign(expires_in=60).startswith("/_storage/media/")
