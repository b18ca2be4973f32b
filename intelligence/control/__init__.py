"""The control API (gRPC, ``llmproxy.control.v1.Control``): feedback, experiments, enhancements,
anomaly verdicts and the live event feed. See docs/control-api.md.

``server.ControlServer`` serves it (embeddable; ``python -m intelligence.control`` runs it alone),
``auth`` checks tokens and roles, ``tls`` holds the optional TLS/mTLS settings of both ends, ``watch`` fans the database's NOTIFY feed out to WatchEvents
subscribers, ``client.ControlClient`` is the CLI's client, ``gen`` holds the generated code
(``python -m intelligence.control.build`` regenerates it).
"""
