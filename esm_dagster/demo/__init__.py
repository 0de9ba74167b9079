"""The embedded demo: a padel club in Bangkok syncing Stripe into its database."""
