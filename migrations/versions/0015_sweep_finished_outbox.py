"""Webhooks hear a sweep's end (issue 25's ``sweep_finished``): the outbox and the deliveries get a ``sweep_id``,
and a trigger on ``sweeps`` writes one outbox row when a sweep's state leaves ``running`` (for ``completed``,
``stopped`` or ``failed``), in the transaction that ends it. ``api.service.sweep_driver.finish`` is the one writer
of that change, and it makes it conditionally (``WHERE state = 'running'``), so a sweep ends once and its event is
queued once, only if the end committed: never from a guess.

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('webhook_outbox', sa.Column('sweep_id', sa.Uuid(), sa.ForeignKey('sweeps.id', ondelete='CASCADE'),
                                              nullable=True))
    op.add_column('webhook_deliveries', sa.Column('sweep_id', sa.Uuid(), nullable=True))
    op.execute("""
        CREATE FUNCTION trainq_webhook_sweep_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO webhook_outbox (sweep_id, event, created_at)
            VALUES (NEW.id, 'sweep_finished', COALESCE(NEW.finished_at, now()));
            RETURN NULL;
        END $$;
    """)
    op.execute("CREATE TRIGGER trg_sweeps_webhook_outbox AFTER UPDATE OF state ON sweeps FOR EACH ROW "
               "WHEN (OLD.state = 'running' AND NEW.state <> 'running') "
               "EXECUTE FUNCTION trainq_webhook_sweep_outbox()")


def downgrade():
    op.execute("DROP TRIGGER trg_sweeps_webhook_outbox ON sweeps")
    op.execute("DROP FUNCTION trainq_webhook_sweep_outbox()")
    op.execute("DELETE FROM webhook_outbox WHERE sweep_id IS NOT NULL")  # (their deliveries go with them)
    op.drop_column('webhook_deliveries', 'sweep_id')
    op.drop_column('webhook_outbox', 'sweep_id')
