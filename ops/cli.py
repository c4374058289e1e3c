"""``flask static export DIR``: the fingerprinted static files, for a proxy to serve.

nginx (deploy/nginx/) serves ``/static/...?v=<hash>`` from ``DIR/<hash>/static/...``
without asking the app; any other static URL goes to the app as before. Each version
gets its own folder and an export never deletes one, so during a rolling upgrade a page
from the old release still finds its old files and a page from the new one its new files.
"""
from __future__ import annotations

import os
import tempfile

import click
from flask import current_app
from flask.cli import AppGroup

from ops import compression

static_cli = AppGroup("static", help="Static files: export them for the proxy.")


@static_cli.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
def export_command(directory: str) -> None:
    """Write every static file as served under its fingerprinted URL into
    DIRECTORY/<hash>/<url path> (modules with their imports fingerprinted), with a .gz
    beside each text file for nginx's gzip_static. Earlier versions are kept."""
    assets = current_app.extensions["static_assets"]
    written = kept = 0
    for asset in {id(a): a for a in assets.by_endpoint.values()}.values():
        target = os.path.join(directory, asset.version, asset.url_path.lstrip("/"))
        if os.path.exists(target):
            kept += 1
            continue
        if asset.mimetype in compression.COMPRESSIBLE:
            body = asset.body(True, None)
            _write(target + ".gz", asset.body(True, "gzip"), asset.mtime_ns)
        else:  # images and the like: their bytes are not kept in memory
            with open(asset.path, "rb") as handle:
                body = handle.read()
        _write(target, body, asset.mtime_ns)  # last: its presence means "complete"
        written += 1
    click.echo(f"{written} static files written, {kept} already there, under {directory}")


def _write(path: str, data: bytes, mtime_ns: int) -> None:
    """Atomically, world-readable (nginx's workers run as another user), with the source's
    modification time so Last-Modified stays the same on every host."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".export-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, 0o644)
    os.utime(temporary, ns=(mtime_ns, mtime_ns))
    os.replace(temporary, path)
