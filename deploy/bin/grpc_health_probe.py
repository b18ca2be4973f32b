#!/usr/bin/env python3
"""gRPC health probe for the sidecar, run INSIDE its container (Kubernetes exec probe, compose healthcheck).

    python /opt/llmproxy/bin/grpc_health_probe.py [--addr 127.0.0.1:50051] [--service NAME] [--timeout 3]

Exit 0 when the server answers SERVING for the service, 1 otherwise (not serving, unknown service,
unreachable, timeout). Why an exec probe: the sidecar binds 127.0.0.1 (only Envoy, in the same pod, may
talk ext_proc to it), and the kubelet's own ``grpc:`` probe connects to the pod IP, where nothing listens.
An exec probe runs in the container's network namespace, so it reaches the loopback-bound port.
"""

from __future__ import annotations

import argparse
import sys

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def check(addr: str, service: str, timeout: float) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=False
            )
        except grpc.RpcError as exc:
            return False, f"{addr}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{addr} {service or '(server)'}: {status}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="gRPC health probe for the llmproxy sidecar")
    p.add_argument("--addr", default="127.0.0.1:50051")
    p.add_argument("--service", default=EXT_PROC_SERVICE, help="health service name ('' = the whole server)")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args(argv)
    ok, message = check(args.addr, args.service, args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
