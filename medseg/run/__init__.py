"""Orchestration for the entry points: build model, data and task from the config; run folders; config checks; errors."""
