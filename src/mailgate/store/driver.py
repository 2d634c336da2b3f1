"""Core statements compiled once and run straight on the SQLite driver, for the hot paths.

Per execution SQLAlchemy builds a cache key, an execution context and processed parameters;
for the one or two small statements of a send call or a delivery outcome that work cost
more than the statements themselves (profiles of B1 and B2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """The driver's SQL and, per positional parameter, its name, bind processor and fixed value.

    The processors are SQLAlchemy's own, so the stored values are exactly what it would store.
    """

    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process, fixed in self.params:
            value = row.get(name, fixed)
            out.append(value if process is None else process(value))
        return out


def _compile(statement: ClauseElement, dialect: Dialect, keys: list[str] | None) -> DriverStatement:
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    assert isinstance(compiled, SQLCompiler)
    params = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        params.append((name, bind.type.dialect_impl(dialect).bind_processor(dialect), bind.value))
    return DriverStatement(compiled.string, tuple(params))


@functools.cache
def driver_insert(table: Table, keys: tuple[str, ...], dialect: Dialect) -> DriverStatement:
    """INSERT of these columns of `table`."""
    return _compile(insert(table), dialect, list(keys))


@functools.cache
def driver_statement(statement: ClauseElement, dialect: Dialect) -> DriverStatement:
    """A module-level statement (cached by identity: never pass one built per call)."""
    return _compile(statement, dialect, None)
