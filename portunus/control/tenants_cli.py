"""`portunus-server users|grants|quota ...`: operator verbs over the HTTP API (tenants_api).

    portunus-server users add NAME [--role user|superadmin] [--password-stdin]
    portunus-server users list | delete USER | passwd USER [--password-stdin]
    portunus-server grants add USER CLIENT PORTS [--protocols tcp,udp] | list [--user USER] | delete ID
    portunus-server quota set USER CLIENT BYTES [--period monthly|daily|never] [--reset-day N]
    portunus-server quota status USER CLIENT | list | delete USER CLIENT

USER is a user id or name; BYTES takes a unit (10MiB, 5GB, 1TiB). A new
password comes from stdin (--password-stdin), $PORTUNUS_NEW_PASSWORD, or a
prompt on a terminal. Lists and statuses print JSON. Exit codes: 0 ok, 1 the
server refused (its error on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

PASSWORD_ENV = "PORTUNUS_NEW_PASSWORD"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'10MiB' -> 10485760; argparse type (ValueError names the accepted units)."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 1048576, 10MiB, 5GB, 1TiB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_ports(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f'not a port range: {text!r} (e.g. "20000-20099" or "8080")')
    start = int(m.group(1))
    return start, int(m.group(2)) if m.group(2) else start


def add_parsers(sub: Any, http: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the users / grants / quota verbs on portunus-server's subparsers."""
    users = sub.add_parser("users", help="add, list, delete operator users; set passwords")
    us = users.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = us.add_parser("add", help="create a user; prints its id")
    add.add_argument("username")
    add.add_argument("--role", choices=("user", "superadmin"), default="user")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    http(add)
    http(us.add_parser("list", help="print the users as JSON"))
    d = us.add_parser("delete", help="delete a user (refused while they own rules)")
    d.add_argument("user", help="user id or name")
    http(d)
    pw = us.add_parser("passwd", help="set a user's password")
    pw.add_argument("user", help="user id or name")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    http(pw)

    grants = sub.add_parser("grants", help="what clients, ports and protocols a user may use")
    gs = grants.add_subparsers(dest="verb", required=True, metavar="VERB")
    ga = gs.add_parser("add", help="grant a user a listen port range on a client; prints the grant id")
    ga.add_argument("user", help="user id or name")
    ga.add_argument("client", help='client name, or "*" for every client')
    ga.add_argument("ports", type=parse_ports, help='listen ports, "A-B" or "A"')
    ga.add_argument("--protocols", default="tcp,udp", help="comma-separated: tcp, udp (default both)")
    http(ga)
    gl = gs.add_parser("list", help="print grants as JSON")
    gl.add_argument("--user", help="only this user's (id or name)")
    http(gl)
    gd = gs.add_parser("delete", help="delete a grant by id")
    gd.add_argument("id", type=int)
    http(gd)

    quota = sub.add_parser("quota", help="traffic quotas per user and client")
    qs = quota.add_subparsers(dest="verb", required=True, metavar="VERB")
    qset = qs.add_parser("set", help="set a user's byte budget on a client (both directions together)")
    qset.add_argument("user", help="user id or name")
    qset.add_argument("client")
    qset.add_argument("bytes", type=parse_bytes, help="budget per period, e.g. 100GiB")
    qset.add_argument("--period", choices=("monthly", "daily", "never"), default="monthly")
    qset.add_argument("--reset-day", type=int, help="monthly: day of the month the period starts (1-31)")
    http(qset)
    for verb, text in (("status", "print the quota's status (used, limit, period end, exhausted) as JSON"),
                       ("delete", "remove a user's quota on a client")):
        q = qs.add_parser(verb, help=text)
        q.add_argument("user", help="user id or name")
        q.add_argument("client")
        http(q)
    http(qs.add_parser("list", help="print every quota's status as JSON"))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            print("error: the passwords differ", file=sys.stderr)
            raise SystemExit(2)
        return first
    print(f"error: no password: pass --password-stdin, set {PASSWORD_ENV}, or run on a terminal", file=sys.stderr)
    raise SystemExit(2)


class _Cli:
    def __init__(self, api: Any, call: Callable[[Callable[[], Any]], Any]) -> None:
        self.api = api
        self.call = call

    def request(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        resp = self.call(lambda: self.api.request(method, path, body))
        if resp is None:
            raise SystemExit(1)
        if resp.status not in ok:
            print(f"error: {resp.describe_error()}", file=sys.stderr)
            raise SystemExit(1)
        return resp.body

    def user_id(self, user: str) -> int:
        if user.isdigit():
            return int(user)
        for u in self.request("GET", "/v1/users")["users"]:
            if u["username"] == user:
                return int(u["id"])
        print(f'error: no user named "{user}" (portunus-server users list)', file=sys.stderr)
        raise SystemExit(1)


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def run(args: argparse.Namespace, api: Any, call: Callable[[Callable[[], Any]], Any]) -> int:
    """Run one users/grants/quota verb against the API."""
    cli = _Cli(api, call)
    cmd, verb = args.command, args.verb
    if cmd == "users":
        if verb == "add":
            body = cli.request("POST", "/v1/users", {"username": args.username, "role": args.role,
                                                    "password": _password(args)}, ok=(201,))
            print(body["id"])
        elif verb == "list":
            _print(cli.request("GET", "/v1/users")["users"])
        elif verb == "delete":
            cli.request("DELETE", f"/v1/users/{cli.user_id(args.user)}")
        elif verb == "passwd":
            cli.request("PUT", f"/v1/users/{cli.user_id(args.user)}/password", {"password": _password(args)})
    elif cmd == "grants":
        if verb == "add":
            protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
            body = cli.request("POST", "/v1/grants", {
                "user_id": cli.user_id(args.user), "client": args.client, "listen_port_start": args.ports[0],
                "listen_port_end": args.ports[1], "protocols": protocols}, ok=(201,))
            print(body["id"])
        elif verb == "list":
            query = f"?user_id={cli.user_id(args.user)}" if args.user else ""
            _print(cli.request("GET", f"/v1/grants{query}")["grants"])
        elif verb == "delete":
            cli.request("DELETE", f"/v1/grants/{args.id}")
    elif cmd == "quota":
        if verb == "list":
            _print(cli.request("GET", "/v1/quotas")["quotas"])
            return 0
        path = f"/v1/users/{cli.user_id(args.user)}/quotas/{args.client}"
        if verb == "set":
            spec: dict[str, Any] = {"bytes": args.bytes, "period": args.period}
            if args.reset_day is not None:
                spec["reset_day"] = args.reset_day
            _print(cli.request("PUT", path, spec))
        elif verb == "status":
            _print(cli.request("GET", f"{path}/status"))
        elif verb == "delete":
            cli.request("DELETE", path)
    return 0
