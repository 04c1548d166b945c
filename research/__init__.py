"""Research code outside the product: how the demo weights were trained, and the diagnostics that
measured them (research/README.md). Neither pip nor colcon installs it; run its modules from the
repository root (`python -m research.<module>`)."""
