"""Performance suite: MLPerf-style single-stream and offline scenarios per model and target."""
