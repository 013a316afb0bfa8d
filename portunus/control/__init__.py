"""The control plane: `portunus-server` and `portunus-client`.

The modules read in the order data flows:

    settings      server.toml -> ServerSettings
    mounts        which filesystem holds a path (state.db refuses tmpfs)
    files         0600 atomic writes that never follow a planted link
    store         SQLite state.db: schema + migrations, file lock, typed rows
    pki           the server's TLS certificate and Ed25519 signing key, fingerprints
    enrollment    one-time enrollment URIs and secrets
    ruleset       Rule <-> JSON, signed rule-set payloads, the client's RuleBook
    signing       canonical JSON, Ed25519 sign / verify
    wire          gRPC method names, JSON codec, stream message types
    rbac          who is calling: users' roles and token scopes
    tenants_db    users, sessions, grants, the quota ledger (schema 3)
    passwords     argon2id password hashes
    grants        which clients, ports and protocols a user's rules may use
    quota_ledger  the server's traffic-quota books: periods, client reports, audit events
    guard         what unauthenticated callers may cost: per-address throttle, bounded audit
    hub           server side of the streams: sessions, versions, pushes, acks
    grpc_service  the gRPC Enroll / Session handlers
    operator_api  the operator HTTP API (aiohttp); tenants_api: its users/sessions/grants/quotas
                  routes; api_errors: ApiError
    server_metrics, server, server_cli    the `portunus-server` process (tenants_cli: its
                  users / grants / quota verbs)
    bundle, lastknown, client, client_cli the `portunus-client` process (lastknown: its
                  verified last rule set on disk, so it forwards while the server is down)

The client applies rules to the same `portunus.dataplane.Forwarder` as
`portunus-standalone`; nothing here touches a forwarded byte.
"""
