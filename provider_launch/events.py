"""Socket.IO events of the visit page (being built)."""
