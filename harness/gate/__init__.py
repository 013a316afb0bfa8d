"""Regression gate: verdicts over microbenchmark runs and the quick run's floors (harness.gate.verdicts)."""
