"""SMART EHR launch routes (being built)."""
