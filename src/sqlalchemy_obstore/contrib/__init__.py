"""Integrations with other libraries: [msgspec][sqlalchemy_obstore.contrib.msgspec],
[Alembic][sqlalchemy_obstore.contrib.alembic], [Litestar][sqlalchemy_obstore.contrib.litestar],
[Starlette/FastAPI][sqlalchemy_obstore.contrib.starlette] and
[FastAPI's dependencies and Pydantic responses][sqlalchemy_obstore.contrib.fastapi].

The msgspec and Alembic submodules import nothing from their library at runtime (msgspec
is a dependency of the package anyway), so importing them never requires the library;
the web integrations need their framework
(the `litestar`, `starlette` or `fastapi` extra). Pydantic support lives on `FileObject`
itself; signed URLs in Pydantic output in the FastAPI module.
"""
