"""An authenticating reverse proxy in front of the Dagster webserver, which has no login of its own.

The webserver stays bound to 127.0.0.1; people reach it only through this proxy (or a production
proxy configured the same way, see deploy/README.md), which knows who they are, maps them to
their catalog role, refuses what their role may not do and stamps the runs they launch.

Kept import-light: `esm_dagster.proxy.tags` is read by the Dagster assets.
"""
