"""The exceptions raised by sqlalchemy-obstore.

Every exception derives from [`StorageError`][sqlalchemy_obstore.StorageError], carries
the backend key and object path it is about (when there is one), and, where the meaning
matches, also derives from the builtin a caller would naturally catch
(`FileNotFoundError`, `ValueError`, `LookupError`, `PermissionError`, `ImportError`):

```text
StorageError
├── ConfigurationError
│   ├── BackendNotFoundError (LookupError)
│   ├── NoDefaultBackendError (LookupError)
│   ├── BackendAlreadyRegisteredError (ValueError)
│   ├── InvalidSizeError (ValueError)
│   ├── UnsupportedSchemeError (ValueError)
│   └── MissingDependencyError (ImportError)
├── FileObjectError
│   ├── InvalidFileObjectError (ValueError)
│   │   ├── InvalidObjectPathError
│   │   └── InvalidFilenameError
│   ├── UntrustedReferenceError (PermissionError)
│   └── NoContentError
├── UnsupportedOperationError
├── InvalidExpiryError (ValueError)
├── SignedURLError (PermissionError)
│   ├── InvalidSignatureError
│   └── ExpiredSignatureError
├── ObjectNotFoundError (FileNotFoundError)
├── ObjectExistsError (FileExistsError)
├── StoragePermissionError (PermissionError)
│   └── PathEscapeError
├── ChecksumMismatchError
├── StorageOperationError
│   └── StorageErrorGroup
├── ForkedProcessError (RuntimeError)
├── RemoteFetchError
│   ├── RemoteTimeoutError (TimeoutError)
│   └── ForbiddenAddressError
├── UploadTicketError
│   ├── InvalidUploadTicketError (ValueError)
│   ├── ExpiredUploadTicketError
│   ├── UploadPartsError (ValueError)
│   └── ReplayedUploadTicketError
└── ValidationError (ValueError)
    ├── FileTooLargeError
    │   └── TooManyPartsError
    ├── FileTooSmallError
    ├── InvalidContentTypeError
    ├── InvalidExtensionError
    └── InvalidImageError
        └── ImageTooLargeError
```

Errors raised by obstore are translated at the I/O boundary (the backend) and chained,
so the original stays available as `__cause__`. Messages never contain credentials:
every message goes through [`redact`][sqlalchemy_obstore.errors.redact] when the error
is made (URL credentials, signatures, keys and tokens are removed), and so does every
record the library logs.
"""

# In the implementation's order, which the reference page follows.
from ._errors import (  # noqa: I001
    redact,
    redact_url,
    StorageError,
    ConfigurationError,
    BackendNotFoundError,
    NoDefaultBackendError,
    InvalidSizeError,
    BackendAlreadyRegisteredError,
    UnsupportedSchemeError,
    MissingDependencyError,
    FileObjectError,
    InvalidFileObjectError,
    InvalidObjectPathError,
    UntrustedReferenceError,
    InvalidFilenameError,
    InvalidKeySegmentError,
    NoContentError,
    UnsupportedOperationError,
    InvalidExpiryError,
    SignedURLError,
    InvalidSignatureError,
    ExpiredSignatureError,
    ObjectNotFoundError,
    ObjectExistsError,
    StoragePermissionError,
    PathEscapeError,
    ChecksumMismatchError,
    StorageOperationError,
    StorageErrorGroup,
    ForkedProcessError,
    ValidationError,
    FileTooLargeError,
    TooManyPartsError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    InvalidImageError,
    ImageTooLargeError,
    RemoteFetchError,
    RemoteTimeoutError,
    ForbiddenAddressError,
    UploadTicketError,
    InvalidUploadTicketError,
    ExpiredUploadTicketError,
    UploadPartsError,
    ReplayedUploadTicketError,
)
from ._public import adopt as _adopt

__all__ = (
    "BackendAlreadyRegisteredError",
    "BackendNotFoundError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "ExpiredSignatureError",
    "FileObjectError",
    "FileTooLargeError",
    "FileTooSmallError",
    "ForbiddenAddressError",
    "ForkedProcessError",
    "ImageTooLargeError",
    "InvalidContentTypeError",
    "InvalidExpiryError",
    "InvalidExtensionError",
    "InvalidFileObjectError",
    "InvalidFilenameError",
    "InvalidImageError",
    "InvalidKeySegmentError",
    "InvalidObjectPathError",
    "InvalidSignatureError",
    "InvalidSizeError",
    "MissingDependencyError",
    "NoContentError",
    "NoDefaultBackendError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "PathEscapeError",
    "RemoteFetchError",
    "RemoteTimeoutError",
    "SignedURLError",
    "StorageError",
    "StorageErrorGroup",
    "StorageOperationError",
    "StoragePermissionError",
    "TooManyPartsError",
    "UnsupportedOperationError",
    "UnsupportedSchemeError",
    "UntrustedReferenceError",
    "ExpiredUploadTicketError",
    "InvalidUploadTicketError",
    "ReplayedUploadTicketError",
    "UploadPartsError",
    "UploadTicketError",
    "ValidationError",
    "redact",
    "redact_url",
)

_adopt(globals())
