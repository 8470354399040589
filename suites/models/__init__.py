"""The reference model suite: every zoo model, judged against its golden, plus task checks."""
