"""Presentation of summaries: markdown report, figures, the README block, the spec's JSON, the gate's tables.

Nothing here measures or computes statistics; every number comes from a summary.
"""
