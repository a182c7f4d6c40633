"""training_jobs.history: one entry per finished epoch, for the monitor's loss and accuracy curves

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('training_jobs', sa.Column('history', postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"),
                                             nullable=False))


def downgrade():
    op.drop_column('training_jobs', 'history')
