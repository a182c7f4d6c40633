"""No task special: a task declares its primary metric (name and whether lower or higher is better), each job
records it at submit, and a task may say how many epochs it runs (the progress bar's total). The ``loss``
column (the newest ``train_loss`` or ``loss``, a rule that named the built-in task's metrics) is dropped; the API
still shows ``loss``, computed from ``metrics`` in one place (``TrainingJob.to_dict``).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    for table in ('task_offers', 'training_jobs'):
        op.add_column(table, sa.Column('metric', sa.String(100), nullable=True))
        op.add_column(table, sa.Column('metric_mode', sa.String(3), nullable=True))
        op.create_check_constraint(f'ck_{table}_metric_mode', table, "metric_mode IN ('min', 'max')")
    op.add_column('training_jobs', sa.Column('total_epochs', sa.Integer(), nullable=True))
    op.drop_column('training_jobs', 'loss')


def downgrade():
    op.add_column('training_jobs', sa.Column('loss', sa.Float(), nullable=True))
    op.execute("UPDATE training_jobs SET loss = COALESCE((metrics->>'train_loss')::float, (metrics->>'loss')::float)")
    op.drop_column('training_jobs', 'total_epochs')
    for table in ('task_offers', 'training_jobs'):
        op.drop_constraint(f'ck_{table}_metric_mode', table)
        op.drop_column(table, 'metric_mode')
        op.drop_column(table, 'metric')
