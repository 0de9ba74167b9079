"""esm_dagster: keeps a business database in sync with its SaaS systems, orchestrated by Dagster."""

import logging

__version__ = "0.1.0"

# A library's records go where the application sends them (Dagster, `esm webhooks serve`, a test's
# caplog); without this, Python's last-resort handler printed each warning on stderr as a second
# line beside the one-line `esm: error: ...` (an endpoint refusal, a failed connection test).
logging.getLogger("esm_dagster").addHandler(logging.NullHandler())
