"""Routes; none yet."""
