"""Integrations with other libraries: [msgspec][sqlalchemy_obstore.contrib.msgspec] and
[Alembic][sqlalchemy_obstore.contrib.alembic].

Each submodule imports nothing from its library at runtime, so importing it never
requires the library; Pydantic support lives on `FileObject` itself.
"""
