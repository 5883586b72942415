"""Stores from configuration: storage URLs, obstore's keywords, what a store can sign.

[`build_store`][] turns a backend's `fs` (a storage URL or a local path) and its
keywords into an obstore store: the request knobs (`timeout`, `connect_timeout`,
`max_retries`, `retry_timeout`) and HTTP client options given as plain keywords
(`allow_http`, ...) are folded into obstore's nested dicts, plain `http://` endpoints
are allowed, S3 copies refuse to overwrite, an Azure emulator honours its endpoint.
[`open_store`][] does so with every failure (obstore panics included) a
`ConfigurationError`. The rest describes a store without its secrets and tells what
its configuration lets it sign.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from obstore import exceptions as obs_errors
from obstore.store import (
    AzureStore,
    GCSStore,
    HTTPStore,
    LocalStore,
    MemoryStore,
    S3Store,
    from_url,
)

from ._errors import ConfigurationError, StorageError, UnsupportedSchemeError, redact
from ._store_errors import first_line, is_panic

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = (
    "build_store",
    "has_static_credentials",
    "open_store",
    "signing_obstacle",
    "signs_natively",
    "store_config",
    "store_kind",
    "store_repr",
    "truthy",
)


def _plain_path(url_path: str) -> str:
    return url_path if url_path.startswith("/") else os.path.abspath(url_path)


# Environment variables obstore reads for a custom endpoint, by URL scheme family.
_ENDPOINT_ENV = {
    "s3": ("AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
    "gs": ("GOOGLE_BASE_URL",),
    "az": ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT", "AZURITE_BLOB_STORAGE_URL"),
}


def _wants_http(config: Mapping[str, Any], scheme: str) -> bool:
    """Whether the endpoint, from the config or the environment, is plain http://."""
    for name, value in config.items():
        if (
            isinstance(value, str)
            and value.startswith("http://")
            and ("endpoint" in name or "url" in name)
        ):
            return True
    family = "s3" if scheme in {"s3", "s3a"} else "az" if scheme in _AZURE_SCHEMES else scheme
    return any(
        os.environ.get(name, "").startswith("http://") for name in _ENDPOINT_ENV.get(family, ())
    )


_AZURE_SCHEMES = frozenset({"az", "azure", "abfs", "abfss", "adl"})
_KNOWN_SCHEMES = (
    "s3://bucket/, gs://bucket/, az://container/ (or azure/abfs/abfss/adl), "
    "https://<account>.blob.core.windows.net/<container>, file:///abs/dir/, memory://"
)


# The request knobs a web application tunes, as plain keywords; each is folded into
# obstore's nested `client_options` / `retry_config`. (name → (nested dict, obstore key))
_REQUEST_KNOBS: dict[str, tuple[str, str]] = {
    "timeout": ("client_options", "timeout"),
    "connect_timeout": ("client_options", "connect_timeout"),
    "max_retries": ("retry_config", "max_retries"),
    "retry_timeout": ("retry_config", "retry_timeout"),
}


def _knob_duration(name: str, value: object) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}."
        )
    if not seconds > 0:
        raise ConfigurationError(f"{name} must be positive, got {seconds:g} seconds.")
    return timedelta(seconds=seconds)


def _fold_request_knobs(config: dict[str, Any]) -> None:
    """Move `timeout`, `connect_timeout`, `max_retries`, `retry_timeout` into obstore's dicts.

    Raises:
        ConfigurationError: For a bad value, or a knob also set in the nested dict.
    """
    for name, (group, key) in _REQUEST_KNOBS.items():
        if name not in config:
            continue
        value = config.pop(name)
        if name == "max_retries":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"max_retries must be a whole number >= 0, got {value!r}.")
            folded: object = value
        else:
            folded = _knob_duration(name, value)
        nested = dict(config.get(group) or {})
        if key in nested:
            raise ConfigurationError(
                f"{name} is given twice: as a keyword and in {group}[{key!r}]; keep one."
            )
        nested[key] = folded
        config[group] = nested


_CLIENT_OPTIONS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "default_headers",
        "http1_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "randomize_addresses",
        "timeout",
        "user_agent",
    }
)
"""obstore's HTTP client options (`client_options=`), also accepted as plain keywords."""
_PROVIDER_PREFIXES = ("aws_", "google_", "azure_")


def _fold_client_options(config: dict[str, Any]) -> None:
    """Move HTTP client options given as plain keywords into `client_options`.

    `allow_http=True` (or `aws_allow_http=True`, a natural guess) is a client option in
    obstore, which expects it inside `client_options` and panics when it meets it among
    the store's own keys.
    """
    for name in list(config):
        bare = name
        for prefix in _PROVIDER_PREFIXES:
            if name.startswith(prefix) and name[len(prefix) :] in _CLIENT_OPTIONS:
                bare = name[len(prefix) :]
        if bare not in _CLIENT_OPTIONS:
            continue
        options = dict(config.get("client_options") or {})
        if bare in options:
            raise ConfigurationError(
                f"{name} is given twice: as a keyword and in client_options[{bare!r}]; keep one."
            )
        options[bare] = config.pop(name)
        config["client_options"] = options


def build_store(fs: str | Path, config: dict[str, Any]) -> ObjectStore:
    """The obstore store a storage URL or local path names, configured by `config`.

    Raises:
        UnsupportedSchemeError: If the URL scheme is not a storage scheme.
        ConfigurationError: For configuration this library refuses itself.
    """
    if isinstance(fs, Path):
        fs.mkdir(parents=True, exist_ok=True)
        return LocalStore(fs.resolve(), mkdir=True, automatic_cleanup=True)
    if not isinstance(fs, str):
        raise ConfigurationError(
            f"fs must be a storage URL or an obstore store, not {type(fs).__name__}."
        )
    scheme = urlsplit(fs).scheme.lower()
    if scheme == "memory":
        if config:
            raise ConfigurationError(f"memory:// takes no configuration, got {sorted(config)}.")
        return MemoryStore()
    if scheme == "file":
        if config:
            raise ConfigurationError(f"file:// takes no configuration, got {sorted(config)}.")
        directory = Path(_plain_path(fs[len("file://") :] or "/"))
        directory.mkdir(parents=True, exist_ok=True)
        return LocalStore(directory, mkdir=True, automatic_cleanup=True)
    if scheme not in {"s3", "s3a", "gs", "https", "http"} | _AZURE_SCHEMES:
        raise UnsupportedSchemeError(
            f"Unsupported storage URL scheme {scheme or '(none)'!r} in {redact(fs)!r}; "
            f"use one of: {_KNOWN_SCHEMES}."
        )
    _fold_request_knobs(config)
    _fold_client_options(config)
    if scheme in {"s3", "s3a"}:
        # Copies that must not overwrite need this on S3; AWS and the usual
        # S3-compatible servers support it.
        config.setdefault("copy_if_not_exists", "multipart")
    if scheme in _AZURE_SCHEMES:
        _azure_emulator_endpoint(config)
    if _wants_http(config, scheme):
        options = dict(config.get("client_options") or {})
        options.setdefault("allow_http", True)
        config["client_options"] = options
    store: ObjectStore = from_url(fs, **config)
    return store


_AZURE_EMULATOR_ACCOUNT = "devstoreaccount1"
# The documented, public account key of every Azure storage emulator (Azurite); not a secret.
_AZURE_EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_AZURE_EMULATOR_FLAGS = ("use_emulator", "azure_storage_use_emulator", "azure_use_emulator")
_AZURE_ENDPOINTS = ("endpoint", "azure_storage_endpoint", "azure_endpoint")
_AZURE_ACCOUNTS = ("account_name", "azure_storage_account_name")
_AZURE_CREDENTIALS = (
    "account_key",
    "access_key",
    "master_key",
    "azure_storage_account_key",
    "azure_storage_access_key",
    "azure_storage_master_key",
    "bearer_token",
    "token",
    "azure_storage_token",
    "sas_key",
    "sas_token",
    "azure_storage_sas_key",
    "azure_storage_sas_token",
    "credential_provider",
)


def _azure_emulator_endpoint(config: dict[str, Any]) -> None:
    """Make `use_emulator=True` honour an explicit `endpoint`.

    In emulator mode obstore ignores `endpoint` and reads `AZURITE_BLOB_STORAGE_URL`
    (default `http://127.0.0.1:10000`), so an emulator on another host or port would be
    missed silently. Given an endpoint, configure the emulator's well-known account on
    that endpoint explicitly instead (Azurite serves it under `/<account>`).
    """
    flag = next((k for k in _AZURE_EMULATOR_FLAGS if k in config), None)
    endpoint_key = next((k for k in _AZURE_ENDPOINTS if config.get(k)), None)
    if flag is None or endpoint_key is None or not truthy(config[flag]):
        return
    del config[flag]
    account = next((str(config[k]) for k in _AZURE_ACCOUNTS if config.get(k)), None)
    if account is None:
        account = config["account_name"] = _AZURE_EMULATOR_ACCOUNT
    if not any(config.get(k) for k in _AZURE_CREDENTIALS):
        config["account_key"] = _AZURE_EMULATOR_KEY
    endpoint = str(config[endpoint_key]).rstrip("/")
    if urlsplit(endpoint).path in {"", "/"}:
        endpoint = f"{endpoint}/{account}"
    config[endpoint_key] = endpoint


def _gcs_oauth_disabled(config: Mapping[str, Any]) -> bool:
    """Whether a GCS service account sets `disable_oauth` (emulator setups do).

    obstore then has no private key and signs through the IAM signBlob API over the
    network, so such a backend must not claim it can sign.
    """
    text = config.get("service_account_key")
    if not text and config.get("service_account"):
        try:
            text = Path(str(config["service_account"])).read_text(encoding="utf-8")
        except OSError:
            return False
    if not isinstance(text, str) or not text:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and truthy(data.get("disable_oauth"))


def store_repr(store: ObjectStore, kind: str) -> str:
    """A secret-free repr of `store` (of the `store_kind` `kind`)."""
    if kind == "memory":
        return "MemoryStore()"  # obstore's own repr is the default <object at 0x...>
    if kind != "azure":
        # obstore's reprs show the URL as configured (an HTTPStore's may hold user:pw@).
        return redact(repr(store))
    # obstore's AzureStore repr panics (a pyo3 PanicException, not an Exception, with a
    # Rust backtrace on stderr) when the config has no account name, as with
    # use_emulator=True; describe Azure stores from their configuration instead.
    config = getattr(store, "config", None)
    config = config if isinstance(config, Mapping) else {}
    container = config.get("container_name", "?")
    account = config.get("account_name") or (
        _AZURE_EMULATOR_ACCOUNT if truthy(config.get("use_emulator")) else "?"
    )
    return f'AzureStore(container_name="{container}", account_name="{account}")'


def truthy(value: object) -> bool:
    """Whether a configuration value means true (obstore keeps config values as strings)."""
    return value is True or (isinstance(value, str) and value.strip().lower() in {"true", "1"})


def store_kind(store: ObjectStore) -> str:
    """`s3`, `gcs`, `azure`, `local`, `memory` or `http`: what kind of store this is.

    Raises:
        ConfigurationError: For a store type the library does not support.
    """
    if isinstance(store, S3Store):
        return "s3"
    if isinstance(store, GCSStore):
        return "gcs"
    if isinstance(store, AzureStore):
        return "azure"
    if isinstance(store, LocalStore):
        return "local"
    if isinstance(store, MemoryStore):
        return "memory"
    if isinstance(store, HTTPStore):
        return "http"
    raise ConfigurationError(f"Unsupported obstore store type {type(store).__name__}.")


_STATIC_CREDENTIAL_KEYS = {
    "s3": ("access_key_id", "secret_access_key"),
    "gcs": ("service_account_key",),
    "azure": ("account_key",),  # obstore normalises access_key/azure_storage_account_key
}


def open_store(key: str, fs: str | Path, config: dict[str, Any]) -> ObjectStore:
    """`build_store`, with every failure a `ConfigurationError` naming backend `key`.

    Raises:
        UnsupportedSchemeError: If the URL scheme is not a storage scheme.
        ConfigurationError: If obstore rejects the configuration.
    """
    try:
        return build_store(fs, config)
    except StorageError:
        raise
    except (obs_errors.BaseError, ValueError, TypeError, OSError) as exc:
        raise ConfigurationError(
            f"Invalid configuration for backend {key!r}: {redact(str(exc))}", backend=key
        ) from exc
    except BaseException as exc:
        if not is_panic(exc):
            raise
        # obstore panics (a BaseException) on some configurations it cannot parse;
        # never let one out of the library.
        raise ConfigurationError(
            f"Invalid configuration for backend {key!r}: obstore refused it "
            f"({redact(first_line(exc))}). Check the configuration keys against "
            "the backend's documentation.",
            backend=key,
        ) from None


def store_config(store: ObjectStore) -> Mapping[str, Any]:
    """The configuration obstore reports for `store` (empty when it reports none)."""
    config = getattr(store, "config", None)
    return config if isinstance(config, Mapping) else {}


def signing_obstacle(kind: str, store: ObjectStore) -> str | None:
    """Why a signing-capable store type cannot sign with this configuration."""
    config = store_config(store)
    if kind == "gcs" and _gcs_oauth_disabled(config):
        # obstore would ask Google's IAM signBlob API to sign: a call to the internet
        # from what should be local computation, failing after retries.
        return (
            "its GCS service account sets disable_oauth, so there is no private key to "
            "sign with. Use a service account key that includes its private key."
        )
    if (
        kind == "azure"
        and config.get("sas_key")
        and not any(config.get(k) for k in ("account_key", "token", "client_id"))
        and getattr(store, "credential_provider", None) is None
    ):
        return (
            "it authenticates with a SAS token, from which no new SAS can be made. "
            "Configure the account key (or Entra ID credentials) to sign."
        )
    return None


def has_static_credentials(kind: str, store: ObjectStore) -> bool:
    """Whether `store` signs with credentials it holds (no request to fetch any)."""
    needed = _STATIC_CREDENTIAL_KEYS.get(kind)
    if not needed or getattr(store, "credential_provider", None) is not None:
        return False
    config = store_config(store)
    return all(config.get(k) for k in needed) or bool(
        kind == "azure" and truthy(config.get("use_emulator"))
    )


def signs_natively(kind: str, store: ObjectStore, obstacle: str | None) -> bool:
    """Whether `store` itself signs URLs (`obstacle`: its `signing_obstacle`)."""
    if kind not in {"s3", "gcs", "azure"} or obstacle:
        return False
    # obstore keeps config values as strings: skip_signature=False reads back "false".
    return not truthy(store_config(store).get("skip_signature"))
