#!/usr/bin/env python3
"""Lifecycle hooks of the sidecar container, driving Envoy's admin API over the pod's loopback.

    python /opt/llmproxy/bin/envoy_drain.py prestop  [--admin 127.0.0.1:9901] [--max-wait 75] [--poll 1]
    python /opt/llmproxy/bin/envoy_drain.py poststart [--admin 127.0.0.1:9901]

prestop (pod termination, and any kill of the sidecar container):
  1. ``POST /healthcheck/fail``: Envoy's ``/ready`` (ops listener) answers 503, so the pod leaves the
     Service's endpoints; Envoy closes idle client connections (HTTP/1 ``connection: close``, HTTP/2 GOAWAY)
     but keeps serving every request in flight, and the sidecar keeps processing them.
  2. waits until Envoy is gone (its admin port stops answering: the Envoy container's own preStop
     ``sleep`` ended and Envoy got SIGTERM) or ``--max-wait`` seconds, logging the active requests.
  So the sidecar always outlives Envoy: no stream loses its processor half-way.
poststart: ``POST /healthcheck/ok``, undoing a fail left by a previous instance of this container (a
  liveness restart runs the preStop hook too). Envoy not up yet (pod start) is fine.

Both always exit 0: a failing hook would only make the kubelet kill the container sooner.
Standard library only: the Envoy image has no curl, the sidecar image has Python.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

ACTIVE_STAT = "http.gateway.downstream_rq_active"


def _call(admin: str, path: str, method: str = "GET", timeout: float = 2.0) -> str | None:
    """The admin response body, or None when Envoy does not answer."""
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://{admin}{path}", method=method), timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None


def active_requests(admin: str) -> int | None:
    body = _call(admin, f"/stats?filter=^{ACTIVE_STAT.replace('.', '[.]')}$")
    if body is None:
        return None
    for line in body.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == ACTIVE_STAT:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return 0


def prestop(admin: str, max_wait: float, poll: float) -> int:
    started = time.monotonic()
    if _call(admin, "/healthcheck/fail", "POST") is None:
        print(f"envoy_drain: Envoy admin {admin} not answering; nothing to drain", file=sys.stderr)
        return 0
    print(
        f"envoy_drain: {admin} health check failed on purpose; waiting for Envoy to exit (max {max_wait:.0f}s)", file=sys.stderr
    )
    last = None
    while time.monotonic() - started < max_wait:
        active = active_requests(admin)
        if active is None:
            print(f"envoy_drain: Envoy gone after {time.monotonic() - started:.1f}s", file=sys.stderr)
            return 0
        if active != last:
            print(f"envoy_drain: {active} requests in flight", file=sys.stderr)
            last = active
        time.sleep(poll)
    print(f"envoy_drain: Envoy still up after {max_wait:.0f}s; stopping the sidecar anyway", file=sys.stderr)
    return 0


def poststart(admin: str) -> int:
    if _call(admin, "/healthcheck/ok", "POST") is not None:
        print(f"envoy_drain: {admin} health check reset to ok", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Envoy drain hooks for the llmproxy sidecar container")
    p.add_argument("hook", choices=["prestop", "poststart"])
    p.add_argument("--admin", default="127.0.0.1:9901", help="Envoy admin address (loopback, same pod)")
    p.add_argument("--max-wait", type=float, default=75.0, help="prestop: seconds to wait for Envoy to exit")
    p.add_argument("--poll", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.hook == "prestop":
        return prestop(args.admin, args.max_wait, args.poll)
    return poststart(args.admin)


if __name__ == "__main__":
    raise SystemExit(main())
