"""Fill in deploy/nginx/virtual-visits.conf.template: ``${VV_...}`` names only.

    python deploy/nginx/render.py VV_SERVER_NAME=visits.example.org \\
        VV_TLS_CERTIFICATE=/etc/ssl/visits.pem ... > /etc/nginx/sites-enabled/virtual-visits

Values not given on the command line come from the environment. Like ``envsubst`` given
the list of names, nginx's own ``$variables`` are left alone; unlike it, a name left
without a value is an error rather than an empty string in the config.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("virtual-visits.conf.template")
NAMES = ("VV_SERVER_NAME", "VV_HTTPS_LISTEN", "VV_HTTP_LISTEN", "VV_TLS_CERTIFICATE",
         "VV_TLS_CERTIFICATE_KEY", "VV_UPSTREAM", "VV_STATIC_EXPORT")
DEFAULTS = {"VV_HTTPS_LISTEN": "443", "VV_HTTP_LISTEN": "80",
            "VV_UPSTREAM": "127.0.0.1:5000", "VV_STATIC_EXPORT": "/srv/virtual-visits/static"}
_NAME = re.compile(r"\$\{(VV_[A-Z_]+)\}")


def render(values: dict[str, str], template: str | None = None) -> str:
    """The template with every ``${VV_...}`` replaced; KeyError names a missing one."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    merged = {**DEFAULTS, **values}
    missing = sorted({name for name in _NAME.findall(text) if not merged.get(name)})
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _NAME.sub(lambda match: merged[match.group(1)], text)


def main(argv: list[str]) -> int:
    values = {name: os.environ[name] for name in NAMES if os.environ.get(name)}
    for argument in argv:
        name, sep, value = argument.partition("=")
        if not sep or name not in NAMES:
            print(f"usage: render.py [NAME=value ...] with NAME one of {', '.join(NAMES)}",
                  file=sys.stderr)
            return 2
        values[name] = value
    try:
        sys.stdout.write(render(values))
    except KeyError as exc:
        print(f"render.py: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
