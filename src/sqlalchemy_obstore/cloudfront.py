"""CloudFront signed URLs: downloads through the CDN, uploads still signed by the store.

A presigned S3 URL sends the browser straight to the bucket, past the CDN; a
`public_base_url` goes through the CDN but is not signed. A
[`CloudFrontSigner`][sqlalchemy_obstore.cloudfront.CloudFrontSigner] given to a backend as
its `read_signer` makes every download URL (`FileObject.sign()`, `sign_files()`,
`backend.sign(..., method="GET")`) a CloudFront signed URL, while upload URLs and upload
tickets keep being signed by the store itself:

```python
from pathlib import Path
from sqlalchemy_obstore import ObstoreBackend
from sqlalchemy_obstore.cloudfront import CloudFrontSigner

cdn = CloudFrontSigner(
    "https://media.example.com",          # the distribution's domain (or alternate domain)
    key_pair_id="K2JCJMDEHXQW5F",         # the public key's ID, in a trusted key group
    private_key=Path("/run/secrets/cloudfront.pem").read_bytes(),
)
backend = ObstoreBackend("media", "s3://media-bucket/", region="eu-west-1", read_signer=cdn)
```

A URL is signed as the CloudFront documentation describes: a *canned* policy
(`Expires`, `Signature`, `Key-Pair-Id`) for one object until a deadline, or a *custom*
policy (`Policy`, `Signature`, `Key-Pair-Id`) that can also name a start time
(`DateGreaterThan`), a viewer IP range (`IpAddress`) and a wildcard resource. The policy
is hashed with SHA-256 by default (sent as `Hash-Algorithm=SHA256`; CloudFront also takes
the original SHA-1) and signed with the private key: RSA (PKCS#1 v1.5, 2048 bits or
more) or ECDSA on P-256, the two key types CloudFront accepts. The signature and the
policy are base64-encoded with CloudFront's URL-safe substitutions (`+` → `-`, `=` → `_`,
`/` → `~`).

Signing needs the `cryptography` package: `pip install 'sqlalchemy-obstore[cloudfront]'`.
It is pure computation (no request is made): under 1 ms per URL with an RSA 2048 key,
about a sixth of that with an ECDSA P-256 key.

A CloudFront signature does not name an HTTP method: a signed URL allows whatever
methods the distribution's cache behavior allows. The signer therefore signs only `GET`
and `HEAD` (anything else raises `UnsupportedOperationError`), and the distribution must
allow only `GET, HEAD` (CloudFront's default) for a download URL to stay a download URL.
See the how-to guide *Serve downloads through a CDN* for the AWS side.

Example:
    >>> from datetime import datetime, timezone
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> key = ec.generate_private_key(ec.SECP256R1())
    >>> cdn = CloudFrontSigner("https://d111111abcdef8.cloudfront.net", "K2JCJMDEHXQW5F", key)
    >>> cdn
    CloudFrontSigner(base_url='https://d111111abcdef8.cloudfront.net', key_pair_id='K2JCJMDEHXQW5F', hash_algorithm='SHA256')
    >>> url = cdn.sign(
    ...     "https://d111111abcdef8.cloudfront.net/docs/a.pdf",
    ...     expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    ... )
    >>> url.split("&Signature=")[0]
    'https://d111111abcdef8.cloudfront.net/docs/a.pdf?Expires=1893456000'
    >>> url.split("&Key-Pair-Id=")[1]
    'K2JCJMDEHXQW5F&Hash-Algorithm=SHA256'
"""  # noqa: E501

# In the implementation's order, which the reference page follows.
from ._cloudfront import (  # noqa: I001
    DEFAULT_MAX_EXPIRES_IN,
    RESERVED_PARAMETERS,
    HashAlgorithm,
    PrivateKey,
    CloudFrontSigner,
)
from ._public import adopt as _adopt

__all__ = (
    "DEFAULT_MAX_EXPIRES_IN",
    "RESERVED_PARAMETERS",
    "CloudFrontSigner",
    "HashAlgorithm",
    "PrivateKey",
)

_adopt(globals())
