"""Which GraphQL mutations each role may send to the Dagster webserver, and the launcher's tags.

The decision is made on the parsed document, never on its text: the operation that will run
(`operationName`, else the only one), its top-level fields by name (aliases and fragment spreads
resolved). Mutations are allowlisted per role and anything not listed, a field added by a
Dagster upgrade included, needs an admin: a new mutation is refused until someone decides who
may send it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, parse
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)

from esm_dagster.proxy.tags import LAUNCHED_BY, LAUNCHED_BY_ROLE, STAMPED

ROLES = ("viewer", "engineer", "admin")
# UI bookkeeping that changes no run, asset or schedule.
VIEWER_MUTATIONS = frozenset({"logTelemetry", "setNuxSeen"})
# Launch, stop and steer runs, backfills, schedules and sensors; reload code locations.
ENGINEER_MUTATIONS = VIEWER_MUTATIONS | {
    "launchRun",
    "launchPipelineExecution",
    "launchMultipleRuns",
    "launchRunReexecution",
    "launchPipelineReexecution",
    "launchPartitionBackfill",
    "resumePartitionBackfill",
    "reexecutePartitionBackfill",
    "cancelPartitionBackfill",
    "terminateRun",
    "terminatePipelineExecution",
    "terminateRuns",
    "reloadRepositoryLocation",
    "reloadWorkspace",
    "startSchedule",
    "stopRunningSchedule",
    "resetSchedule",
    "startSensor",
    "stopSensor",
    "resetSensor",
    "setSensorCursor",
    "sensorDryRun",
    "scheduleDryRun",
    "addDynamicPartition",
    "setAutoMaterializePaused",
    "freeConcurrencySlotsForRun",
}
# Everything else (wipeAssets, deleteRun, shutdownRepositoryLocation, concurrency limits,
# reported events, components, unknown fields) is admin only.
ALLOWED: dict[str, frozenset[str] | None] = {
    "viewer": VIEWER_MUTATIONS,
    "engineer": frozenset(ENGINEER_MUTATIONS),
    "admin": None,  # every mutation
}

# Where a launching mutation carries run tags: field -> argument -> path inside its value.
# A list value (launchMultipleRuns) is stamped element by element.
TAG_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "launchRun": {"executionParams": ("executionMetadata", "tags")},
    "launchPipelineExecution": {"executionParams": ("executionMetadata", "tags")},
    "launchMultipleRuns": {"executionParamsList": ("executionMetadata", "tags")},
    "launchRunReexecution": {
        "executionParams": ("executionMetadata", "tags"),
        "reexecutionParams": ("extraTags",),
    },
    "launchPipelineReexecution": {
        "executionParams": ("executionMetadata", "tags"),
        "reexecutionParams": ("extraTags",),
    },
    "launchPartitionBackfill": {"backfillParams": ("tags",)},
    "reexecutePartitionBackfill": {"reexecutionParams": ("extraTags",)},
}


class GraphQLRefused(Exception):
    """A request the proxy will not forward: `status` 400 (unreadable) or 403 (not allowed)."""

    def __init__(self, status: int, message: str, *, mutation: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.mutation = mutation


@dataclass(slots=True)
class Operation:
    kind: str  # query, mutation, subscription
    fields: list[FieldNode] = field(default_factory=list)

    @property
    def field_names(self) -> list[str]:
        return [f.name.value for f in self.fields]


def select_operation(query: str, operation_name: str | None) -> Operation:
    try:
        document = parse(query, no_location=True, max_tokens=50_000)
    except GraphQLError as exc:
        raise GraphQLRefused(400, f"unreadable GraphQL document: {exc.message}") from None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        chosen = [op for op in operations if op.name is not None and op.name.value == operation_name]
        if not chosen:
            raise GraphQLRefused(400, f"no operation named {operation_name!r} in the document")
    elif len(operations) != 1:
        raise GraphQLRefused(400, f"{len(operations)} operations in the document and no operationName")
    else:
        chosen = operations
    op = chosen[0]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    kind = {
        OperationType.QUERY: "query",
        OperationType.MUTATION: "mutation",
        OperationType.SUBSCRIPTION: "subscription",
    }[op.operation]
    return Operation(kind, list(_top_fields(op.selection_set, fragments, document, set())))


def _top_fields(
    selections: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    document: DocumentNode,
    seen: set[str],
) -> Iterator[FieldNode]:
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _top_fields(selection.selection_set, fragments, document, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen:
                continue
            fragment = fragments.get(name)
            if fragment is None:
                raise GraphQLRefused(400, f"fragment {name!r} is not defined")
            yield from _top_fields(fragment.selection_set, fragments, document, seen | {name})


def may_send(role: str, mutation: str) -> bool:
    if role not in ALLOWED:
        return False
    allowed = ALLOWED[role]
    return allowed is None or mutation in allowed


@dataclass(frozen=True, slots=True)
class Decision:
    operation: Operation
    variables: dict[str, Any]  # as forwarded: launch tags stamped with the operator
    stamped: list[str]  # the launching mutations that were stamped


def authorize(body: Mapping[str, Any], *, email: str, role: str, allow_mutations: bool = True) -> Decision:
    """Check one GraphQL request (`{"query", "variables", "operationName"}`) for `email` acting as
    `role`; raise `GraphQLRefused`, or return the variables to forward."""
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise GraphQLRefused(400, "the request has no GraphQL `query` string")
    name = body.get("operationName")
    if name is not None and not isinstance(name, str):
        raise GraphQLRefused(400, "`operationName` must be a string")
    raw_variables = body.get("variables") or {}
    if not isinstance(raw_variables, dict):
        raise GraphQLRefused(400, "`variables` must be a JSON object")
    operation = select_operation(query, name)
    variables = copy.deepcopy(raw_variables)
    if operation.kind != "mutation":
        return Decision(operation, variables, [])
    stamped: list[str] = []
    for node in operation.fields:
        mutation = node.name.value
        if mutation == "__typename":
            continue
        if not allow_mutations:
            raise GraphQLRefused(
                403, f"mutation {mutation} is not accepted on this channel", mutation=mutation
            )
        if not may_send(role, mutation):
            raise GraphQLRefused(
                403, f"{email} ({role}) may not send the GraphQL mutation {mutation}", mutation=mutation
            )
        if mutation in TAG_PATHS:
            _stamp(node, TAG_PATHS[mutation], variables, email=email, role=role)
            stamped.append(mutation)
    return Decision(operation, variables, stamped)


def _stamp(
    node: FieldNode, paths: Mapping[str, tuple[str, ...]], variables: dict[str, Any], *, email: str, role: str
) -> None:
    """Write the launcher's tags into the variables the launch arguments come from. An argument
    written inline in the document is refused: rewriting the document is where bugs would hide."""
    mutation = node.name.value
    for argument in node.arguments or ():
        path = paths.get(argument.name.value)
        if path is None:
            continue
        if not isinstance(argument.value, VariableNode):
            raise GraphQLRefused(
                400,
                f"{mutation}({argument.name.value}: ...) must be passed as a variable so the proxy can "
                "record who launched it",
                mutation=mutation,
            )
        variable = argument.value.name.value
        value = variables.get(variable)
        if value is None:
            continue  # an optional argument left out; Dagster rejects a required one itself
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            if not isinstance(target, dict):
                raise GraphQLRefused(400, f"variable ${variable} of {mutation} must be an object")
            _set_tags(target, path, email=email, role=role, where=f"${variable}")


def _set_tags(target: dict[str, Any], path: tuple[str, ...], *, email: str, role: str, where: str) -> None:
    holder = target
    for key in path[:-1]:
        child = holder.get(key)
        if child is None:
            child = holder[key] = {}
        if not isinstance(child, dict):
            raise GraphQLRefused(400, f"{where}.{key} must be an object")
        holder = child
    tags = holder.get(path[-1]) or []
    if not isinstance(tags, list):
        raise GraphQLRefused(400, f"{where}.{'.'.join(path)} must be a list of tags")
    kept = [t for t in tags if not (isinstance(t, dict) and t.get("key") in STAMPED)]
    holder[path[-1]] = [*kept, {"key": LAUNCHED_BY, "value": email}, {"key": LAUNCHED_BY_ROLE, "value": role}]
