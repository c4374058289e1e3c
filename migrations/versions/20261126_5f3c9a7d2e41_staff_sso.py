"""staff single sign-on: per-endpoint requirement, EHR user links

Revision ID: 5f3c9a7d2e41
Revises: c41d7e2a9b10
Create Date: 2026-11-26 14:00:00

An endpoint can require its staff to have signed in once with the organization's
OpenID Connect provider; ``staff_identity_links`` remembers which account each EHR user
proved to be, so later launches go straight through.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5f3c9a7d2e41"
down_revision = "c41d7e2a9b10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ehr_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("require_staff_sso", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))

    op.create_table(
        "staff_identity_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("ehr_user_id", sa.String(length=255), nullable=False),
        sa.Column("sso_issuer", sa.String(length=500), nullable=False),
        sa.Column("sso_subject", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_staff_identity_links_endpoint_id_ehr_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_identity_links")),
        sa.UniqueConstraint("endpoint_id", "ehr_user_id",
                            name=op.f("uq_staff_identity_links_endpoint_id_ehr_user_id")),
    )


def downgrade() -> None:
    op.drop_table("staff_identity_links")
    with op.batch_alter_table("ehr_endpoints", schema=None) as batch_op:
        batch_op.drop_column("require_staff_sso")
