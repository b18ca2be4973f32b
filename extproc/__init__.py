"""The hot path: a grpc.aio ext_proc sidecar that Envoy consults for every exchange."""
