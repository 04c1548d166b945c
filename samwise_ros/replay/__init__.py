"""Offline replay of recorded data through the node's tracker: input sources and output writers."""
