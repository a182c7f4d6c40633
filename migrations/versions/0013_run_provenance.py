"""What ran each job, and whether a non-finite objective fails it (issue 23, items 8 and 15): ``provenance``
(written by the worker when an attempt starts: the task's code version, package and version, git commit of its
source, Python, torch, CUDA and GPU driver versions) and ``fail_on_nan`` (the submit's choice; NULL: the task's).

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('training_jobs', sa.Column('provenance', JSONB(), nullable=True))
    op.add_column('training_jobs', sa.Column('fail_on_nan', sa.Boolean(), nullable=True))


def downgrade():
    op.drop_column('training_jobs', 'fail_on_nan')
    op.drop_column('training_jobs', 'provenance')
