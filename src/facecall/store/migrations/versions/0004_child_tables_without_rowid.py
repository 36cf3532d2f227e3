"""SQLite: ``call_participants`` and ``call_device_legs`` become WITHOUT ROWID tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Both tables are only ever reached through their primary key ``(call_id, ...)`` (a call's rows,
an upsert's conflict target) or a secondary index. As rowid tables each row was written twice
-- the table and the primary key's separate index -- and each upsert looked the key up in one
to find the row in the other. Clustered on the primary key, a call's rows share one leaf page
and a write touches one B-tree fewer. PostgreSQL has no such distinction: nothing changes there.

The tables are rebuilt from their own schema text, with or without ``WITHOUT ROWID`` (see
:func:`_rebuild_all`).
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("call_participants", "call_device_legs")  # parent first
SUFFIX = " WITHOUT ROWID"


def _schema(table: str) -> tuple[str, list[str]]:
    """The ``CREATE TABLE`` text of ``table`` and the ``CREATE INDEX`` texts of its indexes."""
    bind = op.get_bind()
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    indexes = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    ).scalars().all()  # fmt: skip
    return create, list(indexes)


def _rebuild_all(*, without_rowid: bool) -> None:
    """Create the tables again from their own schema text, with or without rowid, keeping rows.

    Foreign keys stay on (migrations run in one transaction, where the pragma cannot change):
    rows are held aside in plain copies, the tables dropped children first (dropping a parent
    whose children still exist would cascade), then created and refilled parents first, so
    every refilled row's foreign keys are checked.
    """
    if op.get_bind().dialect.name != "sqlite":
        return
    schemas = {table: _schema(table) for table in TABLES}
    for table in reversed(TABLES):
        op.execute(f"CREATE TEMP TABLE _held_{table} AS SELECT * FROM {table}")
        op.execute(f"DROP TABLE {table}")
    for table in TABLES:
        create, indexes = schemas[table]
        create = create.rstrip().removesuffix(SUFFIX)
        op.execute(create + SUFFIX if without_rowid else create)
        op.execute(f"INSERT INTO {table} SELECT * FROM _held_{table}")
        op.execute(f"DROP TABLE _held_{table}")
        for index in indexes:
            op.execute(index)


def upgrade() -> None:
    _rebuild_all(without_rowid=True)


def downgrade() -> None:
    _rebuild_all(without_rowid=False)
