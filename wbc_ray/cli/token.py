"""`wbc-ray token create|list|revoke`: API tokens of the service (stored only as salted hashes)."""

from __future__ import annotations

import argparse
import time

from ..errors import InvalidInput, UserError
from ._shared import settings

NAME = "token"
HELP = "create, list or revoke the REST API's bearer tokens (for service.auth: true)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--user", help="create: the user the token acts for")
    p.add_argument(
        "--role", choices=["read", "submit", "admin"], default="submit", help="create: default submit"
    )
    p.add_argument("--id", help="revoke: the token's id (from `list`)")
    p.add_argument("--results", help="the service's results folder (default: settings results_dir)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..serve import ServiceDB

    db = ServiceDB(Path(args.results or settings(args).results_dir) / "service.db")
    if args.action == "create":
        if not args.user:
            raise UserError("name the user: wbc-ray token create --user NAME [--role submit|read|admin]")
        try:
            token_id, token = db.create_token(args.user, args.role)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        print(f"token {token_id} for {args.user} ({args.role}); shown once, keep it secret:")
        print(token)
        return 0
    if args.action == "list":
        print(f"{'id':<14} {'user':<20} {'role':<7} {'created':<20} revoked")
        for t in db.tokens():
            made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["created_at"]))
            gone = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["revoked_at"]))
                if t["revoked_at"]
                else "-"
            )
            print(f"{t['token_id']:<14} {t['user']:<20} {t['role']:<7} {made:<20} {gone}")
        return 0
    if not args.id:
        raise UserError(
            "name the token to revoke: wbc-ray token revoke --id ID (ids from `wbc-ray token list`)"
        )
    if not db.revoke(args.id):
        raise InvalidInput(f"no live token {args.id!r}")
    print(f"token {args.id} revoked")
    return 0
