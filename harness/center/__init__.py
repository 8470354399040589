"""The adaptation center as a service: vendors' evidence bundles, intake review,
audit re-runs, the results database and the web registry (docs/center.md)."""

#: the database when neither --db nor $SHIPEI_DB names one (SQLite: no server needed)
DEFAULT_URL = "sqlite:///center/center.db"
URL_ENV = "SHIPEI_DB"
