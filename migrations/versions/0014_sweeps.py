"""Sweeps (issue 24): a ``sweeps`` table (a search over one task's params: its space, objective, sampler, pruner,
budget and state), each trial an ordinary job tagged with its sweep and trial number (``training_jobs.sweep_id``,
``trial_number``: unique together, written in the same INSERT as the job, before anything is enqueued), a
``pruned`` terminal status, and the ``optuna`` schema Optuna's ``RDBStorage`` keeps its studies in.

Optuna's own tables are created by Optuna itself, inside that schema, the first time a process opens the storage
(``api.record.sweep_study.storage``, under an advisory lock): their layout is Optuna's and versioned by Optuna's
own Alembic history (its ``alembic_version`` lives in the ``optuna`` schema, never beside this project's).

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_OLD = "('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')"
_NEW = "('queued', 'running', 'paused', 'completed', 'failed', 'cancelled', 'pruned')"


def upgrade():
    op.execute("CREATE SCHEMA IF NOT EXISTS optuna")
    op.create_table(
        'sweeps',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('task', sa.String(64), nullable=False),
        sa.Column('params', JSONB(), nullable=False),
        sa.Column('space', JSONB(), nullable=False),
        sa.Column('objective_metric', sa.String(100), nullable=False),
        sa.Column('objective_mode', sa.String(3), nullable=False),
        sa.Column('sampler', sa.String(16), nullable=False),
        sa.Column('pruner', sa.String(16), nullable=False),
        sa.Column('seed', sa.Integer(), nullable=True),
        sa.Column('max_trials', sa.Integer(), nullable=False),
        sa.Column('parallel', sa.Integer(), nullable=False),
        sa.Column('resources', JSONB(), nullable=True),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('stop_reason', sa.Text(), nullable=True),
        sa.Column('study_name', sa.String(100), nullable=False, unique=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('running', 'completed', 'stopped', 'failed')", name='ck_sweeps_state'),
        sa.CheckConstraint("objective_mode IN ('min', 'max')", name='ck_sweeps_mode'),
    )
    op.create_index('ix_sweeps_owner_newest', 'sweeps', ['owner_id', 'created_at'])
    op.create_index('ix_sweeps_running', 'sweeps', ['state'], postgresql_where=sa.text("state = 'running'"))
    op.add_column('training_jobs', sa.Column('sweep_id', sa.Uuid(),
                                             sa.ForeignKey('sweeps.id', ondelete='SET NULL'), nullable=True))
    op.add_column('training_jobs', sa.Column('trial_number', sa.Integer(), nullable=True))
    op.add_column('training_jobs', sa.Column('pruned_at', sa.Integer(), nullable=True))
    op.create_index('ix_training_jobs_sweep_trial', 'training_jobs', ['sweep_id', 'trial_number'], unique=True)
    op.drop_constraint('ck_training_jobs_status', 'training_jobs', type_='check')
    op.create_check_constraint('ck_training_jobs_status', 'training_jobs', f"status IN {_NEW}")


def downgrade():
    op.execute("UPDATE training_jobs SET status = 'cancelled' WHERE status = 'pruned'")
    op.drop_constraint('ck_training_jobs_status', 'training_jobs', type_='check')
    op.create_check_constraint('ck_training_jobs_status', 'training_jobs', f"status IN {_OLD}")
    op.drop_index('ix_training_jobs_sweep_trial', 'training_jobs')
    op.drop_column('training_jobs', 'pruned_at')
    op.drop_column('training_jobs', 'trial_number')
    op.drop_column('training_jobs', 'sweep_id')
    op.drop_table('sweeps')
    op.execute("DROP SCHEMA IF EXISTS optuna CASCADE")
