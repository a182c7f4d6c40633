"""Webhooks and trackers (issue 25): users' hooks, an outbox filled by a trigger on ``job_events`` (so an
event is queued for delivery in the same transaction as the status change it reports: once per transition,
never from a guess), each hook's deliveries, and each job's trackers (its TensorBoard folder, its MLflow run).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# the statuses whose entry is an event a hook can ask for (api.record.webhook_tables.STATUS_EVENTS)
_STATUS_EVENTS = "('completed', 'failed', 'cancelled', 'paused')"


def upgrade():
    op.create_table(
        'webhooks',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', JSONB(), nullable=False),
        sa.Column('filter_task', sa.String(64), nullable=True),
        sa.Column('filter_owner_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=True),
        sa.Column('format', sa.String(16), nullable=False, server_default='json'),
        sa.Column('secret', sa.String(64), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False, server_default='true'),
        sa.Column('disabled_reason', sa.Text(), nullable=True),
        sa.Column('consecutive_failures', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("format IN ('json', 'slack')", name='ck_webhooks_format'),
    )
    op.create_index('ix_webhooks_owner', 'webhooks', ['owner_id'])
    op.create_table(
        'webhook_outbox',
        sa.Column('id', sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column('event_id', sa.BigInteger(), sa.ForeignKey('job_events.id', ondelete='CASCADE'), nullable=True),
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), nullable=True),
        sa.Column('event', sa.String(32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
        sa.Column('fanned_out_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_webhook_outbox_pending', 'webhook_outbox', ['id'],
                    postgresql_where=sa.text('fanned_out_at IS NULL'))
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('hook_id', sa.Integer(), sa.ForeignKey('webhooks.id', ondelete='CASCADE'), nullable=False),
        sa.Column('outbox_id', sa.BigInteger(), sa.ForeignKey('webhook_outbox.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('job_id', sa.Uuid(), nullable=True),
        sa.Column('event', sa.String(32), nullable=False),
        sa.Column('status', sa.String(16), nullable=False, server_default='pending'),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name='ck_webhook_deliveries_status'),
        sa.UniqueConstraint('hook_id', 'outbox_id', name='uq_webhook_deliveries_hook_event'),
    )
    op.create_index('ix_webhook_deliveries_hook', 'webhook_deliveries', ['hook_id', 'created_at'])
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'],
                    postgresql_where=sa.text("status = 'pending'"))
    op.execute(f"""
        CREATE FUNCTION trainq_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.to_status IN {_STATUS_EVENTS} THEN
                INSERT INTO webhook_outbox (event_id, job_id, event, created_at)
                VALUES (NEW.id, NEW.job_id, NEW.to_status, NEW.at);
            END IF;
            RETURN NULL;
        END $$;
    """)
    op.execute("CREATE TRIGGER trg_job_events_webhook_outbox AFTER INSERT ON job_events "
               "FOR EACH ROW EXECUTE FUNCTION trainq_webhook_outbox()")
    op.create_table(
        'job_trackers',
        sa.Column('job_id', sa.Uuid(), sa.ForeignKey('training_jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('tensorboard_dir', sa.Text(), nullable=True),
        sa.Column('mlflow_run_id', sa.String(64), nullable=True),
        sa.Column('mlflow_url', sa.Text(), nullable=True),
        sa.Column('lost_reports', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table('job_trackers')
    op.execute("DROP TRIGGER trg_job_events_webhook_outbox ON job_events")
    op.execute("DROP FUNCTION trainq_webhook_outbox()")
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_outbox')
    op.drop_table('webhooks')
