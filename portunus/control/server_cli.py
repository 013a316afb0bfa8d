"""`portunus-server`: the control-plane server and its operator helpers.

    portunus-server --data-dir D serve
    portunus-server gen-token
    portunus-server push-rule CLIENT LISTEN_PORT TARGET [--bandwidth-in-bps N ...] [--sni-pattern NAME]
        --http-endpoint HOST:PORT
    portunus-server create-enrollment NAME ADDRESS --http-endpoint HOST:PORT
    portunus-server users|grants|quota VERB ... --http-endpoint HOST:PORT   (see tenants_cli)

The HTTP verbs take the token from --token or the PORTUNUS_OPERATOR_TOKEN
environment variable. Exit codes: 0 ok; 1 the server
refused (or a listener cannot bind / the data dir is in use); 2 bad usage,
bad server.toml or an unusable data dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portunus.config import ConfigError

TOKEN_ENV = "PORTUNUS_OPERATOR_TOKEN"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portunus-server",
        description="Portunus control-plane server: keeps clients, rules, owners' limits, tokens and the audit "
        "log in D/state.db, pushes signed rule sets to enrolled portunus-client processes over a TLS gRPC "
        "stream, and serves the operator HTTP API and Prometheus metrics.")
    p.add_argument("--data-dir", metavar="D", help="data dir holding server.toml, state.db and tls/ (for serve)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server (reads D/server.toml)",
                           description="Run the server until SIGINT/SIGTERM. D/server.toml keys: control_listen, "
                           "operator_http_listen, operator_token (required); metrics_listen, advertised_endpoint, "
                           "enrollment_ttl_secs, ack_timeout_secs, log_level, log_format (optional).")
    serve.add_argument("--data-dir", dest="serve_data_dir", metavar="D", help=argparse.SUPPRESS)

    sub.add_parser("gen-token", help="print a fresh random token (for operator_token)")

    def http(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--http-endpoint", required=True, metavar="HOST:PORT",
                        help="the server's operator_http_listen")
        sp.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")

    push = sub.add_parser("push-rule", help="create a TCP/UDP rule on a client; prints the rule id",
                          description="POST /v1/rules and wait for the client to ack the rule Active; "
                          "prints the new rule id.")
    push.add_argument("client", help="client name")
    push.add_argument("listen_port", type=int, help="port the client listens on")
    push.add_argument("target", help='where to forward: "host:port" ([IPv6]:port)')
    push.add_argument("--name", help="rule name (default: port-LISTEN_PORT)")
    push.add_argument("--protocol", choices=("tcp", "udp"), default="tcp")
    push.add_argument("--listen-addr", default=None, help="address to bind on the client (default 0.0.0.0)")
    push.add_argument("--owner", help="owner whose shared limits also apply")
    push.add_argument("--bandwidth-in-bps", type=int, metavar="N", help="cap client->target BYTES per second")
    push.add_argument("--bandwidth-out-bps", type=int, metavar="N", help="cap target->client BYTES per second")
    push.add_argument("--new-connections-per-sec", type=float, metavar="N")
    push.add_argument("--concurrent-connections", type=int, metavar="N")
    push.add_argument("--sni-pattern", metavar="NAME",
                      help='route by TLS server name on a shared port: "a.example.com" or "*.example.com"')
    push.add_argument("--health-check-interval-secs", type=float, metavar="S",
                      help="probe the target every S seconds (0 = off)")
    push.add_argument("--no-wait", action="store_true", help="do not wait for the client's ack (202, pending)")
    http(push)

    enroll = sub.add_parser("create-enrollment", help="create a one-time enrollment URI for a client; prints it")
    enroll.add_argument("name", help="client name")
    enroll.add_argument("address", help="the client's host or IP (informational)")
    enroll.add_argument("--ttl-secs", type=float, help="how long the URI stays valid (default: server setting)")
    http(enroll)

    from portunus.control.tenants_cli import add_parsers
    add_parsers(sub, http)
    return p


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def _client(args: argparse.Namespace) -> Any:
    from portunus.control.api_client import OperatorClient

    token = _token(args)
    if not token:
        print(f"error: no operator token: pass --token or set {TOKEN_ENV}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return OperatorClient(args.http_endpoint, token)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _call(fn: Any) -> Any:
    import urllib.error

    try:
        return fn()
    except (urllib.error.URLError, OSError) as e:
        print(f"error: cannot reach the operator API: {getattr(e, 'reason', e)}", file=sys.stderr)
        return None


def push_rule(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"client": args.client, "name": args.name or f"port-{args.listen_port}",
                            "protocol": args.protocol, "listen_port": args.listen_port, "target": args.target}
    if args.listen_addr:
        body["listen_addr"] = args.listen_addr
    if args.owner:
        body["owner"] = args.owner
    if args.sni_pattern is not None:
        body["sni_pattern"] = args.sni_pattern
    if args.health_check_interval_secs is not None:
        body["health_check_interval_secs"] = args.health_check_interval_secs
    limits = {k: getattr(args, k) for k in ("bandwidth_in_bps", "bandwidth_out_bps", "new_connections_per_sec",
                                            "concurrent_connections") if getattr(args, k) is not None}
    if limits:
        body["rate_limit"] = limits
    api = _client(args)
    resp = _call(lambda: api.post("/v1/rules" + ("?wait=false" if args.no_wait else ""), body))
    if resp is None:
        return 1
    if resp.status not in (201, 202):
        print(f"error: {resp.describe_error()}", file=sys.stderr)
        return 1
    print(resp.body["id"])
    return 0


def create_enrollment(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "address": args.address}
    if args.ttl_secs is not None:
        body["ttl_secs"] = args.ttl_secs
    api = _client(args)
    resp = _call(lambda: api.post("/v1/client-enrollments", body))
    if resp is None:
        return 1
    if resp.status != 201:
        print(f"error: {resp.describe_error()}", file=sys.stderr)
        return 1
    print(resp.body["uri"])
    return 0


def serve(data_dir: str | None) -> int:
    from portunus.control.server import run_server
    from portunus.control.settings import load_server_settings, readable_by_others_warning
    from portunus.dataplane import tune_process
    from portunus.runtime import setup_logging

    if not data_dir:
        print("error: serve needs --data-dir D (the directory holding server.toml)", file=sys.stderr)
        return 2
    path = Path(data_dir)
    try:
        settings = load_server_settings(path / "server.toml")
    except ConfigError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, "portunus-server")
    # Each connected client holds one fd: a default soft limit of 1,024 would cap the fleet below that.
    tune_process()
    # Everything the server creates in D (state.db and its WAL, keys, lock) is for its own user only.
    os.umask(0o077)
    warning = readable_by_others_warning(path / "server.toml")
    if warning is not None:
        logging.getLogger("portunus.server").warning("%s", warning)
    return run_server(path, settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "gen-token":
        from portunus.control.rbac import new_token

        print(new_token())
        return 0
    if args.command == "serve":
        return serve(args.serve_data_dir or args.data_dir)
    if args.command == "push-rule":
        return push_rule(args)
    if args.command == "create-enrollment":
        return create_enrollment(args)
    if args.command in ("users", "grants", "quota"):
        from portunus.control.tenants_cli import run as run_tenants
        return run_tenants(args, _client(args), _call)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
