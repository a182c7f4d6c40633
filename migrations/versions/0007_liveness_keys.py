"""Liveness: each running attempt holds an advisory lock in its own database session; its key is on the row.
A logout ends the token's monitor sessions made before it.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('training_jobs', sa.Column('liveness_key', sa.Integer(), nullable=True))
    op.add_column('training_jobs', sa.Column('liveness_since', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_tokens', sa.Column('sessions_ended_at', sa.DateTime(timezone=True), nullable=True))
    # unique among running attempts (2**31 attempts apart at the least); a lock key is a 32-bit integer
    op.execute("CREATE SEQUENCE trainq_liveness_keys AS integer MINVALUE 1 MAXVALUE 2147483647 CYCLE")


def downgrade():
    op.drop_column('api_tokens', 'sessions_ended_at')
    op.execute("DROP SEQUENCE trainq_liveness_keys")
    op.drop_column('training_jobs', 'liveness_since')
    op.drop_column('training_jobs', 'liveness_key')
