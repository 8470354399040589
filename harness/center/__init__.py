"""The adaptation center as a service: vendors' evidence bundles, intake review,
audit re-runs, the results database and the web registry (docs/center.md)."""
