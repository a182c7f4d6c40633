"""job_log_lines: each job's log, saved from its Redis stream when an attempt ends

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'job_log_lines',
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('line', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('job_id', 'n'),
    )
    op.add_column('training_jobs', sa.Column('log_truncated', sa.Boolean(), server_default='false', nullable=False))


def downgrade():
    op.drop_column('training_jobs', 'log_truncated')
    op.drop_table('job_log_lines')
