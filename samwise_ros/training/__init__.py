"""Training SAMWISE: losses, clip batches, the training loop with resumable checkpoints."""
