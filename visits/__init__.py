"""The domain: appointments, participants, join links, presence, lobby, audit."""
from visits import models  # noqa: F401  (registers the tables with the metadata)
