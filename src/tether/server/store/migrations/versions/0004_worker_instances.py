"""server instances and which one holds a session's v1 worker

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 19:50:00

``server_instances`` has a row per server instance (the id in its data directory) with its last
heartbeat; ``sessions.worker_instance`` names the instance holding the session's v1 worker socket,
so that a restart marks only its own workers (and those of gone instances) disconnected
(tether.protocol.instances, docs/protocol.md §4.4).
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('server_instances',
                    sa.Column('id', sa.String(length=64), nullable=False),
                    sa.Column('started_at', sa.Float(), nullable=False),
                    sa.Column('last_seen', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker_instance', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_sessions_connected_workers', ['worker_instance'], unique=False,
                              sqlite_where=sa.text("worker_status = 'connected'"),
                              postgresql_where=sa.text("worker_status = 'connected'"))


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_connected_workers', sqlite_where=sa.text("worker_status = 'connected'"),
                            postgresql_where=sa.text("worker_status = 'connected'"))
        batch_op.drop_column('worker_instance')
    op.drop_table('server_instances')
