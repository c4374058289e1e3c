"""The domain: appointments, participants, join links, presence, lobby, audit."""
from visits import events, models, ratings, retention  # noqa: F401  (models for the metadata; socket handlers; loops)
