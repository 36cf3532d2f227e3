"""``facecall admin users list|add|passwd|delete`` and ``facecall admin invites list|add|withdraw``:
the admin API (``/v1/admin``) from a shell.

The node must run with ``FACECALL_ADMIN_TOKEN`` set; this command reads the same variable, so on
the server's own host it needs nothing else. ``--server`` (default: ``FACECALL_PUBLIC_URL``, else
``http://HOST:PORT`` of the settings) names the node. Passwords are asked for twice on a
terminal, or read as one line from standard input (``echo "$PW" | facecall admin users add bob``).
Exit status: 0 done, 1 the node refused (its reason is printed), 2 a usage or settings error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import httpx

from facecall.client.api import error_detail
from facecall.config import Settings, SettingsError

PROG = "facecall admin"


class AdminError(Exception):
    """What to print before exiting with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _new_password() -> str:
    """A new password: asked twice on a terminal, else one line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise AdminError("the two passwords differ; nothing was changed", 2)
        return first
    line = sys.stdin.readline()
    if not line:
        raise AdminError("no password on standard input; nothing was changed", 2)
    return line.rstrip("\r\n")


def _server(args: argparse.Namespace) -> str:
    if args.server:
        if not str(args.server).startswith(("http://", "https://")):
            raise AdminError(f"--server wants the node's URL, http://… or https://…, not {args.server!r}", 2)
        return str(args.server).rstrip("/")
    try:
        return Settings.from_env().base_url.rstrip("/")
    except SettingsError as exc:
        raise AdminError(str(exc).splitlines()[0], 2) from None


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    token = os.environ.get("FACECALL_ADMIN_TOKEN", "").strip()  # a file read keeps its line break
    if not token:
        raise AdminError("set FACECALL_ADMIN_TOKEN to the node's admin token", 2)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise AdminError("FACECALL_ADMIN_TOKEN holds control characters; no node's token does", 2)
    base = _server(args)
    try:
        response = httpx.request(method, f"{base}{path}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.RemoteProtocolError as exc:
        hint = " (does the node serve HTTPS? then --server https://…)" if base.startswith("http:") else ""
        raise AdminError(f"cannot talk to {base}: {exc}{hint}") from None
    except httpx.HTTPError as exc:
        raise AdminError(f"cannot reach {base}: {exc}") from None
    if response.is_redirect:  # nothing was done: a proxy's http→https redirect, say
        where = response.headers.get("location", "elsewhere")
        raise AdminError(f"{base} redirects to {where} (HTTP {response.status_code}); nothing was "
                         "done: give --server the node's own URL")
    if not response.is_success:
        raise AdminError(f"{error_detail(response)} (HTTP {response.status_code})")
    return response.json() if response.content else None


def _list(args: argparse.Namespace) -> None:
    users: list[dict[str, Any]] = []
    after = ""
    while True:
        page = _request(args, "GET", "/v1/admin/users", params={"limit": 1000, "after": after})
        users += page["users"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    width = max([len("USERNAME"), *(len(u["username"]) for u in users)])
    lines = [f"{'USERNAME':{width}}  {'CREATED':10}  {'DEVICES':>7}  DISPLAY NAME"]
    for u in users:
        created = time.strftime("%Y-%m-%d", time.gmtime(u["created_at"]))
        lines.append(f"{u['username']:{width}}  {created:10}  {u['devices']:>7}  {u['display_name']}")
    _print_list(args, users, lines, "account")


def _print_list(args: argparse.Namespace, items: list[dict[str, Any]], lines: list[str], noun: str) -> None:
    """``items`` as one JSON array with ``--json``, else the table ``lines`` and, on standard
    error, how many there are."""
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return
    print("\n".join(lines))
    print(f"{len(items)} {noun}{'s' if len(items) != 1 else ''}", file=sys.stderr)


def _add(args: argparse.Namespace) -> None:
    body = {"username": args.username, "password": _new_password()}
    if args.display_name:
        body["display_name"] = args.display_name
    user = _request(args, "POST", "/v1/admin/users", json=body)
    print(f"created {user['username']} ({user['id']})")


def _passwd(args: argparse.Namespace) -> None:
    body = {"new_password": _new_password(), "sign_out_devices": args.sign_out_devices}
    _request(args, "PUT", f"/v1/admin/users/{quote(args.username, safe='')}/password", json=body)
    if args.sign_out_devices:
        print(f"set the password of {args.username}: every sign-in ended and every device was removed")
    else:
        print(f"set the password of {args.username}: its sign-ins ended; its devices stay signed in "
              "(--sign-out-devices removes them)")


def _delete(args: argparse.Namespace) -> None:
    if not args.yes:
        raise AdminError(f"deleting {args.username} cannot be undone: repeat with --yes", 2)
    _request(args, "DELETE", f"/v1/admin/users/{quote(args.username, safe='')}")
    print(f"deleted {args.username}")


def _named(text: str) -> str:
    """A username or invitation id: not empty (an empty one would name the collection)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def _days(text: str) -> float:
    """``--days``: a finite number (the node checks the range)."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not math.isfinite(days):
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}")
    return days


def _invites(args: argparse.Namespace) -> None:
    invites: list[dict[str, Any]] = _request(args, "GET", "/v1/admin/invites")["invites"]
    width = max([len("ID"), *(len(i["id"]) for i in invites)])
    lines = [f"{'ID':{width}}  {'STATE':9}  {'EXPIRES (UTC)':16}  {'USED BY':12}  NOTE"]
    for i in invites:
        used_by = i["used_by"] or ("(deleted)" if i["state"] == "used" else "-")
        expires = _when(i["expires_at"])
        lines.append(f"{i['id']:{width}}  {i['state']:9}  {expires:16}  {used_by:12}  {i['note']}")
    _print_list(args, invites, lines, "invitation")


def _invite(args: argparse.Namespace) -> None:
    made = _request(args, "POST", "/v1/admin/invites",
                    json={"note": args.note, "valid_for_days": args.days})
    print(made["link"])
    print(f"invitation {made['invite']['id']}: one account, until {_when(made['invite']['expires_at'])} UTC; "
          "the link is shown only now", file=sys.stderr)


def _withdraw(args: argparse.Namespace) -> None:
    _request(args, "DELETE", f"/v1/admin/invites/{quote(args.id, safe='')}")
    print(f"withdrew invitation {args.id}: its link no longer works")


def _run(args: argparse.Namespace) -> int:
    try:
        args.action(args)
    except AdminError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``admin users list|add|passwd|delete`` and ``admin invites list|add|withdraw``;
    each sets ``args.run(args) -> exit code``."""
    admin = commands.add_parser("admin", help="manage accounts through a node's admin API",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    admin.add_argument("--server", help="the node's URL (default: FACECALL_PUBLIC_URL or http://HOST:PORT)")
    areas = admin.add_subparsers(dest="area", required=True, metavar="AREA")
    users = areas.add_parser("users", help="accounts").add_subparsers(dest="verb", required=True,
                                                                     metavar="ACTION")
    listing = users.add_parser("list", help="every account, with its device count")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(action=_list)
    add = users.add_parser("add", help="create an account (sign-up may be closed)")
    add.add_argument("username", type=_named)
    add.add_argument("--display-name")
    add.set_defaults(action=_add)
    passwd = users.add_parser("passwd", help="set a password; every sign-in of the account ends")
    passwd.add_argument("username", type=_named)
    passwd.add_argument("--sign-out-devices", action="store_true",
                        help="also remove every device of the account")
    passwd.set_defaults(action=_passwd)
    delete = users.add_parser("delete", help="delete an account for good")
    delete.add_argument("username", type=_named)
    delete.add_argument("--yes", action="store_true", help="yes, delete it")
    delete.set_defaults(action=_delete)
    invites = areas.add_parser("invites", help="invitations to make an account").add_subparsers(
        dest="verb", required=True, metavar="ACTION")
    listing = invites.add_parser("list", help="every invitation: open, used (by whom), withdrawn, expired")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(action=_invites)
    add = invites.add_parser("add", help="make an invitation; prints the link to send (shown once)")
    add.add_argument("--note", default="", help="whom it is for (shown in the list)")
    add.add_argument("--days", type=_days, default=7.0,
                     help="how long the link works (default 7, at most 90)")
    add.set_defaults(action=_invite)
    withdraw = invites.add_parser("withdraw", help="withdraw an open invitation: its link stops working")
    withdraw.add_argument("id", type=_named, help="the invitation's id (from `list`)")
    withdraw.set_defaults(action=_withdraw)
    admin.set_defaults(run=_run)
