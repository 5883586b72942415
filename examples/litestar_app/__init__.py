"""A document library on Litestar + sqlalchemy-obstore: upload, list, download, delete.

Run it from the repository root with `python -m examples.litestar_app` (see
`docs/how-to/example-app.md`).
"""

from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
