"""A job's recent history apart from the whole series (issue 21, item 5): ``history_recent`` holds the last 1,000
entries of ``history`` and ``history_length`` how many it has, so the job's read (the job page polls it every
second) never reads the whole ``history`` (100k epochs: 13 MB that PostgreSQL would detoast to cut its end).

A trigger keeps both equal to ``history`` in the same statement as every write of it (the worker's progress
writes, a completion from an outcome file, a resumed attempt's first write that drops what it trains again, and
any other writer), so no writer has to know about them. Existing rows are backfilled.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

RECENT_POINTS = 1000  # api.service.history.INLINE_POINTS

# the last RECENT_POINTS entries of a JSONB array (the whole array when it is no longer)
_RECENT_OF = ("CASE WHEN jsonb_array_length({h}) <= {n} THEN {h} "
              "ELSE jsonb_path_query_array({h}, '$[last - {m} to last]') END")

SYNC_FUNCTION = f"""
CREATE FUNCTION trainq_sync_history_recent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.history_length := COALESCE(jsonb_array_length(NEW.history), 0);
    NEW.history_recent := {_RECENT_OF.format(h='NEW.history', n=RECENT_POINTS, m=RECENT_POINTS - 1)};
    RETURN NEW;
END
$$
"""


def upgrade():
    op.add_column('training_jobs', sa.Column('history_recent', postgresql.JSONB(), nullable=False,
                                             server_default=sa.text("'[]'::jsonb")))
    op.add_column('training_jobs', sa.Column('history_length', sa.Integer(), nullable=False, server_default='0'))
    op.execute(SYNC_FUNCTION)
    op.execute("CREATE TRIGGER trg_training_jobs_history_recent BEFORE INSERT OR UPDATE OF history "
               "ON training_jobs FOR EACH ROW EXECUTE FUNCTION trainq_sync_history_recent()")
    # the backfill: the trigger's own UPDATE (it sets history_recent and history_length from history)
    op.execute("UPDATE training_jobs SET history = history WHERE jsonb_array_length(history) > 0")


def downgrade():
    op.execute("DROP TRIGGER trg_training_jobs_history_recent ON training_jobs")
    op.execute("DROP FUNCTION trainq_sync_history_recent()")
    op.drop_column('training_jobs', 'history_length')
    op.drop_column('training_jobs', 'history_recent')
