"""`python -m sqlalchemy_obstore`: the same as the `sqlalchemy-obstore` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
