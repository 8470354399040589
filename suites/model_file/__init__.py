"""Ad-hoc check of model files given with ``shipei run --model PATH``."""
