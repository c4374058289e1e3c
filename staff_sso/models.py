"""Which organization account an EHR user proved to be, per endpoint.

One row per (endpoint, EHR user): once it exists, that user's launches from that EHR go
straight through. Only the issuer and subject are kept, not the email or name the
provider sent: they identify the account without copying the directory.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from visits.models import UTCDateTime, utcnow

if TYPE_CHECKING:
    from ehr.models import EhrEndpoint


class StaffIdentityLink(db.Model):
    """An EHR user (``Practitioner/…`` as the EHR's fhirUser names them) linked to the
    organization account (``sso_issuer`` + ``sso_subject``) that signed in for them."""

    __tablename__ = "staff_identity_links"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "ehr_user_id",
                            name="uq_staff_identity_links_endpoint_id_ehr_user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # CASCADE: removing an endpoint forgets who signed in from it.
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"))
    ehr_user_id: Mapped[str] = mapped_column(sa.String(255))
    sso_issuer: Mapped[str] = mapped_column(sa.String(500))
    sso_subject: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    endpoint: Mapped[EhrEndpoint] = relationship()

    def __repr__(self) -> str:
        return f"<StaffIdentityLink {self.id} endpoint={self.endpoint_id}>"
