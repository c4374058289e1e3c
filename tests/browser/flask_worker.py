"""A warm ``flask`` command line for the browser tests: one process per live server runs
every ``flask ...`` command the tests ask of it, instead of a new interpreter (and a new
import of the whole app, about 1.5 s of CPU) for each one.

Protocol, a JSON object per line: in ``{"args": [...]}``; out ``{"code": int, "stdout":
str, "stderr": str}``. The commands are the real ones (the same ``flask`` group, with its
plugin commands such as ``db``), run against one app built from this process's
environment, as ``flask --app app`` would build it."""
from __future__ import annotations

import json
import sys
import traceback


def main() -> None:
    replies = sys.stdout  # CliRunner swaps sys.stdout while a command runs
    from flask.cli import ScriptInfo, cli

    from app import create_app

    app = create_app()
    runner = app.test_cli_runner()
    for line in sys.stdin:
        args = json.loads(line)["args"]
        try:
            result = runner.invoke(cli, args, obj=ScriptInfo(create_app=lambda: app))
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                stderr += "".join(traceback.format_exception(result.exception))
        except Exception:  # the worker itself must keep answering
            code, stdout, stderr = 1, "", traceback.format_exc()
        replies.write(json.dumps({"code": code, "stdout": stdout, "stderr": stderr}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
