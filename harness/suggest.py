"""The one did-you-mean of the harness: commands, options, config keys, registry names, policy
arguments, knob spaces and grids all suggest the closest known name the same way."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name closest to ``word`` (case-insensitive), or None when nothing is close."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[hit[0]] if hit else None


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest known name, or ``""`` (ready to append to a message)."""
    hit = closest(word, choices, cutoff)
    return f" Did you mean '{hit}'?" if hit else ""
