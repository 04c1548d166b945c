"""Data: synthetic referring-video scenes (and, later, dataset loaders)."""
