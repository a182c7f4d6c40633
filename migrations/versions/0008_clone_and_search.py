"""Clone and search: a job records the job it was cloned from; indexes for the list's filters (name substring
through pg_trgm where the server has it, owner newest first) and, for sorting by a final metric, job_metric_values:
one row per (job, numeric metric), kept equal to training_jobs.metrics by a trigger, indexed in sort order.

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

    op.create_table(
        'job_metric_values',
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('name', sa.Text(), primary_key=True),
        sa.Column('value', sa.Float(precision=53), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),  # the job's, for the keyset's ties
    )
    op.create_index('ix_job_metric_values_sort', 'job_metric_values', ['name', 'value', 'created_at', 'job_id'])
    op.execute(SYNC_FUNCTION)
    op.execute("CREATE TRIGGER trg_training_jobs_metric_values AFTER INSERT OR UPDATE OF metrics, created_at "
               "ON training_jobs FOR EACH ROW EXECUTE FUNCTION trainq_sync_metric_values()")
    op.execute(f"INSERT INTO job_metric_values (job_id, name, value, created_at) {NUMBERS_OF.format(job='j')} "
               "FROM training_jobs AS j, jsonb_each(CASE WHEN jsonb_typeof(j.metrics) = 'object' THEN j.metrics END) "
               f"AS m WHERE {IS_NUMBER}")


# a metric's value as a float8, for numbers PostgreSQL's float8 holds (every one a Python float gives)
IS_NUMBER = "jsonb_typeof(m.value) = 'number' AND abs((m.value #>> '{}')::numeric) < 1e300"
NUMBERS_OF = "SELECT {job}.id, m.key, (m.value #>> '{{}}')::float8, {job}.created_at"
SYNC_FUNCTION = f"""
CREATE FUNCTION trainq_sync_metric_values() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.metrics IS NOT DISTINCT FROM OLD.metrics
            AND NEW.created_at IS NOT DISTINCT FROM OLD.created_at THEN
        RETURN NULL;
    END IF;
    DELETE FROM job_metric_values WHERE job_id = NEW.id;
    IF jsonb_typeof(NEW.metrics) = 'object' THEN
        INSERT INTO job_metric_values (job_id, name, value, created_at)
        {NUMBERS_OF.format(job='NEW')} FROM jsonb_each(NEW.metrics) AS m WHERE {IS_NUMBER};
    END IF;
    RETURN NULL;
END
$$"""


def downgrade():
    op.execute("DROP TRIGGER trg_training_jobs_metric_values ON training_jobs")
    op.execute("DROP FUNCTION trainq_sync_metric_values()")
    op.drop_table('job_metric_values')
    op.execute("DROP INDEX IF EXISTS ix_training_jobs_name_trgm")  # the extension stays: others may use it
    op.drop_index('ix_training_jobs_owner_newest', table_name='training_jobs')
    op.drop_constraint('fk_training_jobs_cloned_from', 'training_jobs', type_='foreignkey')
    op.drop_column('training_jobs', 'cloned_from')
