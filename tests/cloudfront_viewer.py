"""What CloudFront does with a signed URL, rebuilt from its documentation for the tests.

An independent check of `sqlalchemy_obstore.cloudfront`: nothing here imports the signer.
It follows the CloudFront Developer Guide ("Create a signed URL using a canned policy",
"... using a custom policy", "Linux commands and OpenSSL for base64 encoding"):

- the signing parameters come last, in this order: `Expires` (canned) or `Policy`
  (custom), `Signature`, `Key-Pair-Id`, and optionally `Hash-Algorithm` (`SHA256`;
  without it the hash is SHA-1);
- for a canned policy the policy statement is rebuilt from the URL without them,
  `{"Statement":[{"Resource":"<URL>","Condition":{"DateLessThan":{"AWS:EpochTime":<Expires>}}}]}`;
  a custom policy is carried base64-encoded in `Policy`;
- base64 values use `-`, `_` and `~` for `+`, `=` and `/`;
- the signature is RSA (PKCS#1 v1.5) or ECDSA (DER) over the policy statement's bytes,
  checked with the public key named by `Key-Pair-Id`;
- the policy's `Resource` must match the requested URL (`*` any characters, `?` one),
  `DateLessThan` must be in the future, `DateGreaterThan` (if any) in the past and the
  viewer's address inside `IpAddress.AWS:SourceIp` (if any).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PublicKey: TypeAlias = "rsa.RSAPublicKey | ec.EllipticCurvePublicKey"

SIGNING_PARAMETERS = ("Signature", "Key-Pair-Id")
CANNED = '{{"Statement":[{{"Resource":"{url}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}'  # noqa: E501


class Refused(Exception):
    """CloudFront would answer 403; the message says why."""


def unb64(value: str) -> bytes:
    """Undo CloudFront's base64 (`-` → `+`, `_` → `=`, `~` → `/`)."""
    return base64.b64decode(value.translate(str.maketrans("-_~", "+=/")), validate=True)


def _matches(pattern: str, url: str) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, url, re.S) is not None


def check(
    url: str,
    keys: Mapping[str, PublicKey],
    *,
    now: float,
    viewer_ip: str = "198.51.100.1",
) -> dict[str, Any]:
    """Check `url` as CloudFront would at time `now`; return the policy statement.

    Raises:
        Refused: If CloudFront would refuse the request.
    """
    base, _, query = url.partition("?")
    pairs = [tuple(pair.split("=", 1)) for pair in query.split("&")] if query else []
    names = [pair[0] for pair in pairs]
    first = next((i for i, name in enumerate(names) if name in {"Expires", "Policy"}), None)
    if first is None:
        raise Refused("not signed")
    own, signing = pairs[:first], dict(pairs[first:])
    expected = [names[first], *SIGNING_PARAMETERS]
    if "Hash-Algorithm" in signing:
        expected.append("Hash-Algorithm")
    if names[first:] != expected:
        raise Refused(f"signing parameters out of order or repeated: {names[first:]}")
    requested = base + ("?" + "&".join("=".join(p) for p in own) if own else "")
    algorithm = signing.get("Hash-Algorithm", "SHA1")
    digest = {"SHA1": hashes.SHA1(), "SHA256": hashes.SHA256()}.get(algorithm)
    if digest is None:
        raise Refused(f"unknown hash algorithm {algorithm}")
    key = keys.get(signing["Key-Pair-Id"])
    if key is None:
        raise Refused("key not in the trusted key group")
    if "Expires" in signing:
        policy = CANNED.format(url=requested, expires=signing["Expires"]).encode()
    else:
        policy = unb64(signing["Policy"])
    signature = unb64(signing["Signature"])
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, policy, padding.PKCS1v15(), digest)
        else:
            key.verify(signature, policy, ec.ECDSA(digest))
    except InvalidSignature:
        raise Refused("signature does not match") from None
    statement = json.loads(policy)["Statement"]
    if len(statement) != 1:
        raise Refused("one statement expected")
    resource, condition = statement[0]["Resource"], statement[0]["Condition"]
    if not _matches(resource, requested):
        raise Refused(f"resource {resource} does not match {requested}")
    if not now < condition["DateLessThan"]["AWS:EpochTime"]:
        raise Refused("expired")
    if "DateGreaterThan" in condition and not now > condition["DateGreaterThan"]["AWS:EpochTime"]:
        raise Refused("not valid yet")
    if "IpAddress" in condition:
        network = ipaddress.ip_network(condition["IpAddress"]["AWS:SourceIp"])
        if ipaddress.ip_address(viewer_ip) not in network:
            raise Refused("viewer address outside the policy's range")
    return dict(statement[0])
