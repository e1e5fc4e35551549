"""undelivered inbound events: a partial index instead of one over every event

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:05:00

``ix_events_pending`` (session_id, delivery) held a row for every event, so every worker
event — almost all of them — wrote a page of it in its commit (and later its checkpoint).
The only query it serves asks for inbound events not yet processed, in sequence order;
``ix_events_undelivered`` holds just those rows, ordered by (session_id, seq).
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

UNDELIVERED = "delivery IS NOT NULL AND delivery != 'processed'"


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_pending')
    op.create_index('ix_events_undelivered', 'events', ['session_id', 'seq'], unique=False,
                    sqlite_where=sa.text(UNDELIVERED), postgresql_where=sa.text(UNDELIVERED))


def downgrade() -> None:
    op.drop_index('ix_events_undelivered', table_name='events')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_pending', ['session_id', 'delivery'], unique=False)
