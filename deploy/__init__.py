"""Production deployment: the PostgreSQL profile, its check, and the distributed executor."""
