"""EHR rows. Filled in by the storage work."""
