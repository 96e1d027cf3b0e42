"""Benchmarks for lambda-chat: scripts that print figures (not tests). Entry point: `python -m benchmarks.run`."""
