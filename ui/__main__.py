"""``python -m ui [--host 127.0.0.1] [--port 8501]``: run the dashboard on its own.

Refuses (exit status 2, before Streamlit starts) to bind beyond loopback without SECRET_KEY: without
it the dashboard has no authentication. ``llmproxy up`` starts the dashboard on 127.0.0.1 itself;
the app re-checks the address it is served on either way (ui.auth.bind_problem).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from intelligence.access import AccessSettings, UnsafeBind, require_safe_bind

APP = Path(__file__).resolve().parent / "streamlit_app.py"  # the st.App: pages + live feed + Host allowlist


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    args = parser.parse_args(argv)
    try:
        require_safe_bind(args.host, AccessSettings.from_env(), what="dashboard")
    except UnsafeBind as exc:
        print(exc.code, file=sys.stderr)
        return 2
    command = streamlit_command(args.host, args.port)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
