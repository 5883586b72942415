"""Savepoint handles that let one test scenario drive a `Session` or an `AsyncSession`."""

from __future__ import annotations

from abc import ABC, abstractmethod

from sqlalchemy.ext.asyncio import AsyncSessionTransaction
from sqlalchemy.orm import SessionTransaction

__all__ = ["Savepoint", "SyncSavepoint", "AsyncSavepoint"]


class Savepoint(ABC):
    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...


class SyncSavepoint(Savepoint):
    def __init__(self, transaction: SessionTransaction) -> None:
        self.transaction = transaction

    async def commit(self) -> None:
        self.transaction.commit()

    async def rollback(self) -> None:
        self.transaction.rollback()


class AsyncSavepoint(Savepoint):
    def __init__(self, transaction: AsyncSessionTransaction) -> None:
        self.transaction = transaction

    async def commit(self) -> None:
        await self.transaction.commit()

    async def rollback(self) -> None:
        await self.transaction.rollback()
