"""sqlalchemy-obstore: async-native, Rust-backed file attachments for SQLAlchemy 2.

Store files in object storage (S3, GCS, Azure, local files, memory) through
[obstore](https://developmentseed.org/obstore/) and keep references to them in a JSON
column; the session uploads before the row is written and deletes replaced files only
after the commit.
"""

from __future__ import annotations

from .backends import Backend, ObjectInfo, ObstoreBackend, SignedURL, WriteResult
from .composite import MirrorBackend, OverlayBackend
from .errors import (
    BackendAlreadyRegisteredError,
    BackendNotFoundError,
    ChecksumMismatchError,
    ConfigurationError,
    ExpiredSignatureError,
    ExpiredUploadTicketError,
    FileObjectError,
    FileTooLargeError,
    FileTooSmallError,
    ForbiddenAddressError,
    InvalidContentTypeError,
    InvalidExpiryError,
    InvalidExtensionError,
    InvalidFilenameError,
    InvalidFileObjectError,
    InvalidImageError,
    InvalidSignatureError,
    InvalidUploadTicketError,
    MissingDependencyError,
    NoContentError,
    ObjectExistsError,
    ObjectNotFoundError,
    RemoteFetchError,
    ReplayedUploadTicketError,
    SignedURLError,
    StorageError,
    StorageErrorGroup,
    StorageOperationError,
    StoragePermissionError,
    UnsupportedOperationError,
    UnsupportedSchemeError,
    UploadTicketError,
    ValidationError,
)
from .file_object import FileObject, FileObjectList, SaveOptions
from .gc import (
    BackendGarbage,
    FileColumn,
    Finding,
    GarbageReport,
    VerificationReport,
    collect_garbage,
    collect_garbage_async,
    find_file_columns,
    verify_references,
    verify_references_async,
)
from .keys import KeyFunction, sanitize_filename
from .lifecycle import (
    CONCURRENCY_KEY,
    TRACKING_KEY,
    disable_tracking,
    enable_tracking,
    is_tracking,
)
from .migration import (
    MigrationFailure,
    MigrationProgress,
    MigrationReport,
    migrate,
    migrate_async,
)
from .registry import BackendRegistry, storages
from .types import StoredObject
from .validation import UploadPolicy, detect_content_type

__version__ = "0.1.0"

__all__ = (
    "Backend",
    "BackendAlreadyRegisteredError",
    "BackendGarbage",
    "BackendNotFoundError",
    "BackendRegistry",
    "CONCURRENCY_KEY",
    "ChecksumMismatchError",
    "ConfigurationError",
    "ExpiredSignatureError",
    "FileColumn",
    "FileObject",
    "FileObjectError",
    "FileObjectList",
    "FileTooLargeError",
    "FileTooSmallError",
    "Finding",
    "ForbiddenAddressError",
    "GarbageReport",
    "InvalidContentTypeError",
    "InvalidExpiryError",
    "InvalidExtensionError",
    "InvalidImageError",
    "InvalidSignatureError",
    "InvalidFileObjectError",
    "InvalidFilenameError",
    "KeyFunction",
    "MigrationFailure",
    "MigrationProgress",
    "MigrationReport",
    "MirrorBackend",
    "MissingDependencyError",
    "NoContentError",
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObstoreBackend",
    "OverlayBackend",
    "RemoteFetchError",
    "SaveOptions",
    "SignedURL",
    "SignedURLError",
    "StorageError",
    "StorageErrorGroup",
    "StorageOperationError",
    "StoragePermissionError",
    "StoredObject",
    "TRACKING_KEY",
    "UnsupportedOperationError",
    "UnsupportedSchemeError",
    "UploadPolicy",
    "UploadTicketError",
    "ExpiredUploadTicketError",
    "InvalidUploadTicketError",
    "ReplayedUploadTicketError",
    "ValidationError",
    "VerificationReport",
    "WriteResult",
    "__version__",
    "collect_garbage",
    "collect_garbage_async",
    "detect_content_type",
    "disable_tracking",
    "enable_tracking",
    "find_file_columns",
    "is_tracking",
    "migrate",
    "migrate_async",
    "sanitize_filename",
    "storages",
    "verify_references",
    "verify_references_async",
)
