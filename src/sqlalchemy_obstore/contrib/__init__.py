"""Integrations with other libraries: [msgspec][sqlalchemy_obstore.contrib.msgspec],
[Alembic][sqlalchemy_obstore.contrib.alembic], [Litestar][sqlalchemy_obstore.contrib.litestar]
and [Starlette/FastAPI][sqlalchemy_obstore.contrib.starlette].

The msgspec and Alembic submodules import nothing from their library at runtime (msgspec
is a dependency of the package anyway), so importing them never requires the library;
the web integrations need their framework
(the `litestar` or `starlette` extra). Pydantic support lives on `FileObject` itself.
"""
