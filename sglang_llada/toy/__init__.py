"""Toy-size LLaDA2 checkpoints that stand in for the real ones on machines without a GPU."""
