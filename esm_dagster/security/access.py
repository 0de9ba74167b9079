"""Who may do what: operators (rows of `user` with a role) and the permissions of each role.

Every `esm` command runs as an operator, named by `--as` or `ESM_USER`, and checks one permission
before it touches anything. Refusals are audited. A catalog with no operator yet (a fresh
install, a developer's sandbox) runs in single-operator mode: whoever runs `esm` acts as admin
under the name they give (or `local`), until `esm operators add` creates the first operator; from
then on every command must say who it runs as.

Roles, from least to most:
- viewer: reads mappings, runs, tasks, quarantine and the audit log; never credentials;
- engineer: also writes mappings, rules and credentials, syncs, backfills, replays, tests
  connections;
- admin: also rotates keys, upgrades the catalog and manages operators.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from esm_dagster.catalog.audit import Actor, record_now
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import User, UserRole

VIEWER_PERMISSIONS = frozenset({"mapping.read", "runs.read", "tasks.read", "quarantine.read", "audit.read"})
ENGINEER_PERMISSIONS = VIEWER_PERMISSIONS | {
    "mapping.write",
    "credentials.write",
    "sync.run",
    "quarantine.replay",
    "connection.test",
    "webhooks.serve",
}
ADMIN_PERMISSIONS = ENGINEER_PERMISSIONS | {"keys.rotate", "catalog.upgrade", "operators.manage"}
PERMISSIONS: dict[str, frozenset[str]] = {
    UserRole.VIEWER.value: VIEWER_PERMISSIONS,
    UserRole.ENGINEER.value: frozenset(ENGINEER_PERMISSIONS),
    UserRole.ADMIN.value: frozenset(ADMIN_PERMISSIONS),
}
ALL_PERMISSIONS = frozenset(ADMIN_PERMISSIONS)
LOCAL = "local"


class AccessDenied(PermissionError):
    """An operator tried something their role does not allow, or nobody said who they are."""


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: str
    single_operator_mode: bool = False

    def actor(self, source: str = "cli") -> Actor:
        return Actor(self.name, self.role, source)

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def _operators(url: str) -> dict[str, str]:
    """email (lower case) -> role, for every active user with a role."""
    with session_factory(url)() as session:
        rows = session.execute(
            sa.select(User.email, User.role).where(User.role.is_not(None), User.is_active.is_(True))
        ).all()
    return {str(email).strip().lower(): str(role) for email, role in rows if email and role is not None}


OPERATOR_FILE = "operator"


def default_operator() -> str | None:
    """`ESM_USER`, else the email in `$ESM_HOME/operator` (which `esm demo` writes for its own
    catalog, like git's user.email): who runs `esm` when the command line does not say."""
    from esm_dagster.catalog.db import esm_home

    name = os.environ.get("ESM_USER", "").strip()
    if name:
        return name
    try:
        return (esm_home() / OPERATOR_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def identify(url: str, requested: str | None = None) -> Operator:
    """The operator this command runs as: `requested` (`--as`), else `default_operator()`."""
    name = (requested or default_operator() or "").strip()
    operators = _operators(url)
    if not operators:
        return Operator(name or LOCAL, UserRole.ADMIN.value, single_operator_mode=True)
    if not name:
        some = ", ".join(sorted(operators)[:3]) + (", ..." if len(operators) > 3 else "")
        raise AccessDenied(
            f"this catalog has operators ({some}): say who you are with --as EMAIL or ESM_USER=EMAIL "
            "(or put the email in $ESM_HOME/operator)"
        )
    role = operators.get(name.lower())
    if role is None:
        raise AccessDenied(f"{name!r} is not an active operator of this catalog")
    return Operator(name.lower(), role)


def require(url: str, operator: Operator, permission: str, *, what: str) -> None:
    """Refuse (and audit the refusal) unless `operator`'s role grants `permission`."""
    if permission not in ALL_PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    if operator.may(permission):
        return
    record_now(
        url,
        "access.denied",
        actor=operator.actor(),
        outcome="denied",
        details={"permission": permission, "command": what},
    )
    raise AccessDenied(
        f"{operator.name} ({operator.role}) may not {what}: it needs the {permission} permission"
    )
