"""Worked examples (not installed): a learned controller trained from a sweep and judged with `harness compare`."""
