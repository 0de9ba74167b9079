"""esm_dagster: keeps a business database in sync with its SaaS systems, orchestrated by Dagster."""

__version__ = "0.1.0"
