"""Experiment kinds, one module each (their summaries; sections and figures join them next)."""
