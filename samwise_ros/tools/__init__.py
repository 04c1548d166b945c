"""Command-line tools: demo, replay, evaluation, training."""
