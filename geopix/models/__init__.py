"""Networks, self-describing checkpoints and the registry of shipped weights."""
