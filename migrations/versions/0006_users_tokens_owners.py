"""Users and hashed API tokens; every job gets an owner, every event the user who acted (if any)

Existing jobs go to the first admin. When there are jobs but no user yet, a placeholder admin named
``admin`` (no token: give it one with ``flask --app api tokens create admin``, or ``make run`` does) is
created to own them.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('name', sa.String(64), nullable=False, unique=True),
        sa.Column('is_admin', sa.Boolean(), nullable=False, server_default='false'),
        sa.Column('disabled', sa.Boolean(), nullable=False, server_default='false'),
        sa.Column('max_queued_jobs', sa.Integer(), nullable=True),
        sa.Column('job_disk_limit_mb', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(100), nullable=False),
        sa.Column('token_hash', sa.String(64), nullable=False, unique=True),
        sa.Column('scope', sa.String(16), nullable=False, server_default='all'),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('all', 'metrics')", name='ck_api_tokens_scope'),
    )
    op.create_index('ix_api_tokens_user_id', 'api_tokens', ['user_id'])
    op.add_column('training_jobs', sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=True))
    op.add_column('job_events', sa.Column('actor_user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=True))
    op.execute("""
        INSERT INTO users (name, is_admin, created_at)
        SELECT 'admin', true, now() WHERE EXISTS (SELECT 1 FROM training_jobs)
                                      AND NOT EXISTS (SELECT 1 FROM users WHERE is_admin)
    """)
    op.execute("UPDATE training_jobs SET owner_id = (SELECT min(id) FROM users WHERE is_admin) WHERE owner_id IS NULL")
    op.alter_column('training_jobs', 'owner_id', nullable=False)
    op.create_index('ix_training_jobs_owner_status', 'training_jobs', ['owner_id', 'status'])


def downgrade():
    op.drop_index('ix_training_jobs_owner_status', table_name='training_jobs')
    op.drop_column('job_events', 'actor_user_id')
    op.drop_column('training_jobs', 'owner_id')
    op.drop_index('ix_api_tokens_user_id', table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
