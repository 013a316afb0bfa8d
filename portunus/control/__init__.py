"""The control plane: `portunus-server` and `portunus-client`.

The modules read in the order data flows:

    settings      server.toml -> ServerSettings
    mounts        which filesystem holds a path (state.db refuses tmpfs)
    store         SQLite state.db: schema + migrations, file lock, typed rows
    pki           the server's TLS certificate and Ed25519 signing key, fingerprints
    enrollment    one-time enrollment URIs and secrets
    ruleset       Rule <-> JSON, signed rule-set payloads, the client's RuleBook
    signing       canonical JSON, Ed25519 sign / verify
    wire          gRPC method names, JSON codec, stream message types
    rbac          roles and what each may do
    hub           server side of the streams: sessions, versions, pushes, acks
    grpc_service  the gRPC Enroll / Session handlers
    operator_api  the operator HTTP API (aiohttp)
    server_metrics, server, server_cli    the `portunus-server` process
    bundle, client, client_cli            the `portunus-client` process
    bench_push    rule push -> listener latency benchmark

The client applies rules to the same `portunus.dataplane.Forwarder` as
`portunus-standalone`; nothing here touches a forwarded byte.
"""
