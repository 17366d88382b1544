"""Benchmarks, each run side by side with a named peer tool (see scripts/bench)."""
