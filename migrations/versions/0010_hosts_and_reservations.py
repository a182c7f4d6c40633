"""Hosts and reservations: each worker host (its agent) says what it has (CPUs, memory, GPUs by index and UUID),
each job says what it needs (``resources``), and the scheduler's placement is a reservation row written before
anything is enqueued. No GPU is ever held twice: a held GPU is a row of ``gpu_holds``, whose primary key is the
(host, GPU). A reservation ends with its attempt: a trigger deletes it (and its GPU holds) the moment the job's
row leaves queued/running or moves to another attempt, and wakes the scheduler (NOTIFY trainq_scheduler).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

RELEASE = """
CREATE OR REPLACE FUNCTION trainq_release_reservations() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('trainq_scheduler', 'submit');
        RETURN NEW;
    END IF;
    IF NEW.status NOT IN ('queued', 'running') OR NEW.attempts <> OLD.attempts THEN
        DELETE FROM reservations
         WHERE job_id = NEW.id AND (attempt <> NEW.attempts OR NEW.status NOT IN ('queued', 'running'));
        IF FOUND THEN
            PERFORM pg_notify('trainq_scheduler', 'release');
        END IF;
    END IF;
    IF NEW.status = 'queued' AND OLD.status <> 'queued' THEN
        PERFORM pg_notify('trainq_scheduler', 'queued');
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql
"""


def upgrade():
    op.create_table(
        'hosts',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('name', sa.String(200), nullable=False, unique=True),  # the agent's name (its workers': <name>-<n>)
        sa.Column('hostname', sa.String(255), nullable=False),
        sa.Column('cpus', sa.Integer(), nullable=False),
        sa.Column('memory_mb', sa.Integer(), nullable=False),
        sa.Column('slots', sa.Integer(), nullable=False),  # jobs it runs at once (its RQ workers)
        sa.Column('fake_gpus', sa.Boolean(), nullable=False, server_default='false'),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),  # the database's clock
    )
    op.create_table(
        'host_gpus',
        sa.Column('host_id', sa.Integer(), sa.ForeignKey('hosts.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('idx', sa.Integer(), primary_key=True),  # NVML's index (PCI bus order)
        sa.Column('uuid', sa.String(100), nullable=False),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('memory_mb', sa.Integer(), nullable=False),
    )
    op.create_table(
        'reservations',
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('host_id', sa.Integer(), sa.ForeignKey('hosts.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('gpus', ARRAY(sa.Integer()), nullable=False, server_default='{}'),
        sa.Column('cpus', sa.Integer(), nullable=False),
        sa.Column('cpu_ids', ARRAY(sa.Integer()), nullable=False, server_default='{}'),
        sa.Column('memory_mb', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
    )
    op.create_table(
        'gpu_holds',
        sa.Column('host_id', sa.Integer(), primary_key=True),
        sa.Column('gpu', sa.Integer(), primary_key=True),  # one live holder per (host, GPU): the primary key
        sa.Column('job_id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['job_id', 'host_id'], ['reservations.job_id', 'reservations.host_id'],
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['host_id', 'gpu'], ['host_gpus.host_id', 'host_gpus.idx'], ondelete='CASCADE'),
    )
    op.add_column('training_jobs', sa.Column('resources', JSONB(), nullable=True))  # what it asked, resolved
    # a job that waited past MAX_BACKFILL_WAIT: the host whose devices are held for it as they free up
    op.add_column('training_jobs', sa.Column('hold_host_id', sa.Integer(),
                                             sa.ForeignKey('hosts.id', ondelete='SET NULL'), nullable=True))
    op.add_column('task_offers', sa.Column('resources', JSONB(), nullable=True))  # the task's declared defaults
    op.execute(RELEASE)
    op.execute("CREATE TRIGGER trg_training_jobs_reservations AFTER INSERT OR UPDATE OF status, attempts "
               "ON training_jobs FOR EACH ROW EXECUTE FUNCTION trainq_release_reservations()")


def downgrade():
    op.execute("DROP TRIGGER trg_training_jobs_reservations ON training_jobs")
    op.execute("DROP FUNCTION trainq_release_reservations()")
    op.drop_column('task_offers', 'resources')
    op.drop_column('training_jobs', 'hold_host_id')
    op.drop_column('training_jobs', 'resources')
    op.drop_table('gpu_holds')
    op.drop_table('reservations')
    op.drop_table('host_gpus')
    op.drop_table('hosts')
