"""Tasks: each job runs a registered task with its params (the old config becomes the built-in mlp task's
params); what workers offer; each job's artifacts

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column('training_jobs', 'config', new_column_name='params')
    op.add_column('training_jobs', sa.Column('task', sa.String(64), nullable=False, server_default='mlp'))
    op.alter_column('training_jobs', 'task', server_default=None)
    op.create_index('ix_training_jobs_task_newest', 'training_jobs', ['task', 'created_at', 'id'])
    op.create_table(
        'task_offers',
        sa.Column('worker_name', sa.String(200), primary_key=True),
        sa.Column('task', sa.String(64), primary_key=True),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('params_schema', postgresql.JSONB(), nullable=False),
        sa.Column('params_order', postgresql.JSONB(), nullable=False),
        sa.Column('code_version', sa.String(64), nullable=False),
        sa.Column('module', sa.String(200), nullable=False),
        sa.Column('hostname', sa.String(255), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_task_offers_task', 'task_offers', ['task', 'published_at'])
    op.create_table(
        'job_artifacts',
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('name', sa.String(128), primary_key=True),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table('job_artifacts')
    op.drop_index('ix_task_offers_task', table_name='task_offers')
    op.drop_table('task_offers')
    op.drop_index('ix_training_jobs_task_newest', table_name='training_jobs')
    op.drop_column('training_jobs', 'task')
    op.alter_column('training_jobs', 'params', new_column_name='config')
