"""harness: evaluation of adaptive MoE vision-language inference (accuracy next to latency)."""

__version__ = "0.1.0"
