"""The visit page (being built)."""
