"""The implementation of `sqlalchemy_obstore.signing`, documented and imported there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._hmac import MIN_SECRET_BYTES
from ._url_signer import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_EXPIRES_IN,
    HmacUrlSigner,
    development_signer,
)

if TYPE_CHECKING:
    from ._registry import BackendRegistry

__all__ = (
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_EXPIRES_IN",
    "MIN_SECRET_BYTES",
    "HmacUrlSigner",
    "attach_signer",
    "detach_signer",
    "development_signer",
)


def attach_signer(
    registry: BackendRegistry, signer: HmacUrlSigner, *, only_unsigned: bool = True
) -> list[str]:
    """Give `signer` to every registered backend whose store cannot sign natively.

    S3, GCS and Azure backends keep signing natively and are never changed.

    Args:
        registry: The registry whose backends to equip (usually `storages`).
        signer: The signer to attach.
        only_unsigned: Leave backends that already have a `url_signer` alone; with
            `False` their signer is replaced.

    Returns:
        The keys of the backends that got `signer`.

    Example:
        >>> from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
        >>> registry = BackendRegistry()
        >>> registry.register_backend(ObstoreBackend("files", "memory://"))
        >>> attach_signer(registry, HmacUrlSigner("x" * 32))
        ['files']
        >>> registry.get_backend("files").supports_signing
        True
    """
    attached = []
    for key, backend in registry.backends.items():
        if backend.supports_native_signing:
            continue
        current = getattr(backend, "url_signer", None)
        if current is signer or (current is not None and only_unsigned):
            continue
        backend.url_signer = signer
        attached.append(key)
    return attached


def detach_signer(registry: BackendRegistry, signer: HmacUrlSigner) -> list[str]:
    """Remove `signer` from every registered backend that uses it; return their keys.

    The counterpart of [`attach_signer`][sqlalchemy_obstore.signing.attach_signer],
    called when an application shuts down.

    Example:
        >>> from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
        >>> registry = BackendRegistry()
        >>> registry.register_backend(ObstoreBackend("files", "memory://"))
        >>> signer = HmacUrlSigner("x" * 32)
        >>> attach_signer(registry, signer), detach_signer(registry, signer)
        (['files'], ['files'])
    """
    detached = []
    for key, backend in registry.backends.items():
        if getattr(backend, "url_signer", None) is signer:
            backend.url_signer = None
            detached.append(key)
    return detached
