"""Rows of the visit domain. Filled in by the storage work."""
