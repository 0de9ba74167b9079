"""Ask a running Dagster webserver to reload the `esm` code location after a catalog change.

Definitions are built from the table once per code-location load, so a new, edited, enabled or
disabled mapping shows in a running `dagster dev` only after a reload. `esm mapping add|enable|
disable` call this; it is best effort (no webserver running is normal) and talks only to the
configured UI URL.
"""

from __future__ import annotations

import os

import httpx

from esm_dagster.alerts.message import ui_url

LOCATION = os.environ.get("ESM_DAGSTER_LOCATION", "esm")
MUTATION = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry { name }
    ... on PythonError { message }
    ... on RepositoryLocationNotFound { message }
  }
}
"""


def reload_code_location(url: str | None = None, location: str = LOCATION, timeout: float = 60.0) -> str:
    """Returns a one-line outcome for the CLI; never raises for an absent webserver."""
    base = (url or ui_url()).rstrip("/")
    try:
        response = httpx.post(
            f"{base}/graphql",
            json={"query": MUTATION, "variables": {"location": location}},
            timeout=httpx.Timeout(timeout, connect=2.0),
        )
    except httpx.ConnectError:
        return f"no Dagster UI at {base}; the change shows at its next start or reload"
    except httpx.HTTPError as exc:
        return f"could not reload the Dagster UI at {base}: {type(exc).__name__}"
    if response.status_code != 200:
        return f"the Dagster UI at {base} answered HTTP {response.status_code} to the reload"
    result = (response.json().get("data") or {}).get("reloadRepositoryLocation") or {}
    if result.get("__typename") == "WorkspaceLocationEntry":
        return f"reloaded code location {location!r} in the Dagster UI at {base}"
    return f"the Dagster UI at {base} did not reload {location!r}: {result.get('message', result)}"
