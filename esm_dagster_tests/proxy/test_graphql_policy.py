"""The mutation policy decides on the parsed operation, not its text, and stamps every launch."""

from __future__ import annotations

import pytest

from esm_dagster.proxy.graphql_policy import GraphQLRefused, authorize, may_send
from esm_dagster.proxy.tags import LAUNCHED_BY, LAUNCHED_BY_ROLE

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) { __typename }
}
"""


def tags_of(variables: dict, *path: str) -> dict[str, str]:
    holder = variables
    for key in path:
        holder = holder[key]
    return {t["key"]: t["value"] for t in holder}


def test_viewers_run_queries_and_subscriptions_but_no_launch() -> None:
    query = {"query": "query { assetNodes { assetKey { path } } }"}
    assert authorize(query, email="v@x.example", role="viewer").operation.kind == "query"
    subscription = {"query": 'subscription { pipelineRunLogs(runId: "r") { __typename } }'}
    assert authorize(subscription, email="v@x.example", role="viewer").operation.kind == "subscription"
    with pytest.raises(
        GraphQLRefused, match=r"v@x.example \(viewer\) may not send the GraphQL mutation launchRun"
    ) as caught:
        authorize({"query": LAUNCH, "variables": {"params": {}}}, email="v@x.example", role="viewer")
    assert caught.value.status == 403 and caught.value.mutation == "launchRun"


@pytest.mark.parametrize(
    "document",
    [
        # an alias does not hide the field
        'mutation { harmless: terminateRun(runId: "r") { __typename } }',
        # nor a fragment spread, nor an inline fragment, nor a second allowed field before it
        'mutation { ...M } fragment M on Mutation { terminateRun(runId: "r") { __typename } }',
        "mutation { ... on Mutation { wipeAssets(assetPartitionRanges: []) { __typename } } }",
        'mutation { setNuxSeen terminateRun(runId: "r") { __typename } }',
        # a field this policy has never heard of
        "mutation { launchSomethingNew { __typename } }",
    ],
)
def test_viewers_cannot_hide_a_mutation(document: str) -> None:
    with pytest.raises(GraphQLRefused) as caught:
        authorize({"query": document}, email="v@x.example", role="viewer")
    assert caught.value.status == 403


def test_the_operation_that_runs_is_the_one_checked() -> None:
    document = 'query Q { version } mutation M { terminateRun(runId: "r") { __typename } }'
    assert authorize({"query": document, "operationName": "Q"}, email="v@x.example", role="viewer")
    with pytest.raises(GraphQLRefused, match="terminateRun"):
        authorize({"query": document, "operationName": "M"}, email="v@x.example", role="viewer")
    with pytest.raises(GraphQLRefused, match="no operationName") as caught:
        authorize({"query": document}, email="v@x.example", role="viewer")
    assert caught.value.status == 400
    with pytest.raises(GraphQLRefused, match="unreadable") as caught:
        authorize({"query": "mutation {"}, email="v@x.example", role="viewer")
    assert caught.value.status == 400


def test_roles_grow_and_unknown_mutations_need_an_admin() -> None:
    assert may_send("viewer", "setNuxSeen") and not may_send("viewer", "launchPartitionBackfill")
    assert may_send("engineer", "launchPartitionBackfill") and may_send("engineer", "terminateRun")
    for destructive in ("wipeAssets", "deleteRun", "shutdownRepositoryLocation", "launchSomethingNew"):
        assert not may_send("engineer", destructive), destructive
        assert may_send("admin", destructive), destructive
    assert not may_send("nobody", "setNuxSeen")


def test_a_launch_is_stamped_with_the_operator_over_any_forged_tag() -> None:
    variables = {
        "params": {
            "selector": {"jobName": "j"},
            "executionMetadata": {
                "tags": [{"key": LAUNCHED_BY, "value": "boss@x.example"}, {"key": "team", "value": "data"}]
            },
        }
    }
    decision = authorize({"query": LAUNCH, "variables": variables}, email="eng@x.example", role="engineer")
    assert decision.stamped == ["launchRun"]
    assert tags_of(decision.variables, "params", "executionMetadata", "tags") == {
        "team": "data",
        LAUNCHED_BY: "eng@x.example",
        LAUNCHED_BY_ROLE: "engineer",
    }
    # the caller's dict is left alone
    assert variables["params"]["executionMetadata"]["tags"][0]["value"] == "boss@x.example"
    # no executionMetadata at all: created
    bare = authorize({"query": LAUNCH, "variables": {"params": {}}}, email="eng@x.example", role="engineer")
    assert tags_of(bare.variables, "params", "executionMetadata", "tags")[LAUNCHED_BY] == "eng@x.example"


def test_backfills_multiple_runs_and_reexecutions_are_stamped() -> None:
    backfill = authorize(
        {
            "query": "mutation($b: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $b) { __typename } }",
            "variables": {"b": {"partitionNames": ["2026-11-01"]}},
        },
        email="eng@x.example",
        role="engineer",
    )
    assert tags_of(backfill.variables, "b", "tags")[LAUNCHED_BY] == "eng@x.example"
    multiple = authorize(
        {
            "query": "mutation($l: [ExecutionParams!]!) { launchMultipleRuns(executionParamsList: $l) { __typename } }",
            "variables": {"l": [{}, {"executionMetadata": {"tags": []}}]},
        },
        email="eng@x.example",
        role="engineer",
    )
    assert [tags_of(p, "executionMetadata", "tags")[LAUNCHED_BY] for p in multiple.variables["l"]] == [
        "eng@x.example",
        "eng@x.example",
    ]
    rerun = authorize(
        {
            "query": "mutation($r: ReexecutionParams) { launchRunReexecution(reexecutionParams: $r) { __typename } }",
            "variables": {"r": {"parentRunId": "p", "strategy": "ALL_STEPS"}},
        },
        email="admin@x.example",
        role="admin",
    )
    assert tags_of(rerun.variables, "r", "extraTags") == {
        LAUNCHED_BY: "admin@x.example",
        LAUNCHED_BY_ROLE: "admin",
    }


def test_a_launch_written_inline_is_refused_because_it_cannot_be_stamped() -> None:
    inline = 'mutation { launchRun(executionParams: {selector: {jobName: "j"}}) { __typename } }'
    with pytest.raises(GraphQLRefused, match="must be passed as a variable") as caught:
        authorize({"query": inline}, email="eng@x.example", role="engineer")
    assert caught.value.status == 400


def test_websocket_channel_takes_no_mutation_even_from_an_admin() -> None:
    with pytest.raises(GraphQLRefused, match="not accepted on this channel"):
        authorize(
            {"query": "mutation { setNuxSeen }"}, email="a@x.example", role="admin", allow_mutations=False
        )
