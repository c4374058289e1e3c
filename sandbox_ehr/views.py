"""Sandbox pages; placeholder until the sandbox work lands."""
from sandbox_ehr import bp


@bp.get("")
def schedule():
    """The clinic schedule."""
    return "sandbox schedule"
