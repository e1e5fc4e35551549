"""sessions: why a session was archived, and the session that continues it

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:30:00

``archive_reason`` is one of tether.protocol.archive.ARCHIVE_REASONS (NULL: archived without a
reason, or not archived); ``successor_id`` is the ULID body of the session a bridge created in
the same machine and directory after this one ended (docs/protocol.md §4.2).
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archive_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('successor_id', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('successor_id')
        batch_op.drop_column('archive_reason')
