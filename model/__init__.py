"""The STM network and its checkpoints."""
