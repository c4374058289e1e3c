"""The domain: appointments, participants, join links, presence, lobby, audit."""
from visits import events, models  # noqa: F401  (models for the metadata; socket handlers)
