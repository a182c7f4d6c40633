"""Clone and search: a job records the job it was cloned from; indexes for the list's filters (name substring
through pg_trgm where the server has it, owner newest first).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('training_jobs', sa.Column('cloned_from', sa.Uuid(), nullable=True))
    op.create_foreign_key('fk_training_jobs_cloned_from', 'training_jobs', 'training_jobs', ['cloned_from'], ['id'],
                          ondelete='SET NULL')
    op.create_index('ix_training_jobs_owner_newest', 'training_jobs', ['owner_id', 'created_at', 'id'])
    # name ILIKE '%x%' uses a trigram index; pg_trgm is a trusted extension (PostgreSQL 13+) shipped with the
    # server's contrib. A server without it still filters by name, by scanning.
    available = op.get_bind().execute(sa.text(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar()
    if available:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_training_jobs_name_trgm ON training_jobs USING gin (name gin_trgm_ops)")


def downgrade():
    op.execute("DROP INDEX IF EXISTS ix_training_jobs_name_trgm")  # the extension stays: others may use it
    op.drop_index('ix_training_jobs_owner_newest', table_name='training_jobs')
    op.drop_constraint('fk_training_jobs_cloned_from', 'training_jobs', type_='foreignkey')
    op.drop_column('training_jobs', 'cloned_from')
