"""max_attempts and resume_from: retries and resume from a checkpoint

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('training_jobs', sa.Column('max_attempts', sa.Integer(), server_default='1', nullable=False))
    op.add_column('training_jobs', sa.Column('resume_from', sa.Text(), nullable=True))


def downgrade():
    op.drop_column('training_jobs', 'resume_from')
    op.drop_column('training_jobs', 'max_attempts')
