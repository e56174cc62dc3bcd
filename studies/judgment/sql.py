"""The statements of the annotator's hot path, in SQL (issue #14), for `studies/judgment/` (assign, picking, rules).

A pick runs about ten statements. Built by the ORM, each cost 0.3-2.7 ms of Python to compile
(select_related, counting subqueries, row locks): about 12 ms of a pick's 19 ms of Python
(docs/benchmarks.md). Here the same statements are written once as SQL:

- the columns come from the models' `_meta`, and rows become model instances through the
  fields' own database converters, as the ORM's would (JSON, booleans, datetimes on SQLite);
- values are prepared by the fields (`get_db_prep_save`), and inserts and updates go through
  `pre_save`, so `auto_now_add` and the JSON adapters behave as with `save()`;
- every statement goes through Django's cursor wrapper: the query log, `CaptureQueriesContext`
  (tests/test_annotation_queries.py), execute wrappers and error translation see it;
- on PostgreSQL each statement is prepared on the connection on first use (psycopg's server-side
  binding, through the project's backend: `preparing_cursor`, ualign_web/db_backend/base.py) and runs its generic plan (`plan_cache_mode=force_generic_plan`, set on the connection
  by settings.py): PostgreSQL plans it once per connection instead of once per pick. Planning was
  most of the PostgreSQL CPU a pick cost: 0.57 ms of the 0.67 ms of the locked read of the pick,
  0.35 of the claim's 0.5 (EXPLAIN ANALYZE, docs/benchmarks.md). The generic plans walk the same
  indexes as the custom ones; all that differs is that no plan is made per call.
  `DB_PREPARED_STATEMENTS` (settings.py) turns this off, as behind PgBouncer before 1.21.

Prepared without the generic-plan setting (commit 9cf39ce), the statements were 1.1-1.2× slower
than plain SQL: PostgreSQL kept planning the claim afresh at each call (its generic plan's
estimate, made without the quota and the kind, looked worse), now over the extended protocol.

The SQL is portable between PostgreSQL and SQLite (the embedded default) except the row-lock
clauses, which only PostgreSQL gets (`locking`); SQLite serialises writers instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, Any], Any]


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


@dataclass(frozen=True)
class Columns(Generic[M]):
    """A model's concrete columns under a table alias (`only`: just these attnames, the others
    deferred on the loaded instance), and how to turn them back into an instance."""

    model: type[M]
    alias: str
    only: tuple[str, ...] | None = None

    @cached_property
    def fields(self) -> tuple[Field, ...]:
        return _fields(self.model, self.only)

    @cached_property
    def sql(self) -> str:
        return ", ".join(f"{self.alias}.{quote(field.column)}" for field in self.fields)

    @cached_property
    def table(self) -> str:
        return f"{quote(self.model._meta.db_table)} {self.alias}"

    def __len__(self) -> int:
        return len(self.fields)

    @cached_property
    def attnames(self) -> list[str]:
        return [field.attname for field in self.fields]

    def load(self, row: Sequence[Any], start: int = 0) -> M:
        """The instance whose columns start at `row[start]`, converted as the ORM converts them."""
        values = list(row[start : start + len(self)])
        for i, column, converters in _converters(self.model, self.only, connection.vendor):
            value = values[i]
            for convert in converters:
                value = convert(value, column, connection)
            values[i] = value
        return self.model.from_db(DEFAULT_DB_ALIAS, self.attnames, values)


def _fields(model: type[Model], only: tuple[str, ...] | None) -> tuple[Field, ...]:
    fields = model._meta.concrete_fields
    return tuple(fields if only is None else (f for f in fields if f.attname in only))


@cache
def _converters(model: type[Model], only: tuple[str, ...] | None, vendor: str) -> list[tuple[int, Any, list[Converter]]]:
    """Per column that needs one, the backend's and the field's converters (what the ORM's
    compiler applies to a selected column); a column without converters is left as read."""
    table = model._meta.db_table
    out = []
    for i, field in enumerate(_fields(model, only)):
        column = field.get_col(table)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)  # type: ignore[attr-defined]
        if converters:
            out.append((i, column, converters))
    return out


def columns(model: type[M], alias: str, only: tuple[str, ...] | None = None) -> Columns[M]:
    return Columns(model, alias, only)


def locking(of: str, *, skip_locked: bool = False) -> str:
    """`FOR NO KEY UPDATE OF <aliases>` (and `SKIP LOCKED`) on PostgreSQL; nothing on SQLite,
    whose write transaction already serialises the callers."""
    if not connection.features.has_select_for_update:
        return ""
    return f" FOR NO KEY UPDATE OF {of}" + (" SKIP LOCKED" if skip_locked else "")


def _cursor() -> Any:
    """Django's cursor; on PostgreSQL with prepared statements on, one whose statements psycopg
    prepares (`preparing_cursor`, ualign_web/db_backend/base.py)."""
    if connection.vendor == "postgresql" and settings.UALIGN_PREPARED_STATEMENTS:
        return connection.preparing_cursor()  # type: ignore[attr-defined]
    return connection.cursor()


def fetch(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with _cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fetch_one(sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    rows = fetch(sql, params)
    return rows[0] if rows else None


def execute(sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement; the number of rows it changed."""
    with _cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


@cache
def _insert_sql(model: type[Model], vendor: str) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    pk = model._meta.pk
    assert pk is not None
    sql = "INSERT INTO {} ({}) VALUES ({}) RETURNING {}".format(
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
        quote(str(pk.column)),
    )
    return sql, fields


def insert(obj: M) -> M:
    """INSERT one new instance (its auto primary key set from RETURNING), preparing each value as
    `save()` would (`pre_save`: auto_now_add; `get_db_prep_save`: JSON, datetimes)."""
    sql, fields = _insert_sql(type(obj), connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    row = fetch_one(sql, params)
    assert row is not None
    pk = obj._meta.pk
    assert pk is not None
    # The saved row as the ORM loads one (`from_db`: an instance known to be in the database), with
    # the related objects the caller had set on it.
    saved = type(obj).from_db(DEFAULT_DB_ALIAS, [pk.attname, *(f.attname for f in fields)],
                              [row[0], *(getattr(obj, f.attname) for f in fields)])  # fmt: skip
    for field in fields:
        if field.is_relation and field.is_cached(obj):  # type: ignore[attr-defined]
            setattr(saved, field.name, getattr(obj, field.name))
    return saved


@cache
def _update_sql(model: type[Model], names: tuple[str, ...], vendor: str) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(model._meta.get_field(name) for name in names)
    pk = model._meta.pk
    assert pk is not None
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(model._meta.db_table),
        ", ".join(f"{quote(str(f.column))} = %s" for f in fields),  # type: ignore[union-attr]
        quote(str(pk.column)),
    )
    return sql, fields  # type: ignore[return-value]


def update(obj: Model, names: Iterable[str]) -> int:
    """UPDATE the named fields of a saved instance by primary key (`save(update_fields=...)`
    without the ORM's compilation)."""
    sql, fields = _update_sql(type(obj), tuple(names), connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(obj, False), connection) for f in fields]
    return execute(sql, [*params, obj.pk])


def prep(model: type[Model], name: str, value: Any) -> Any:
    """A value as the field sends it to the database (a JSON field's adapter, a datetime on SQLite)."""
    return model._meta.get_field(name).get_db_prep_save(value, connection)  # type: ignore[union-attr]
