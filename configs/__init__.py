"""Configuration files shipped with the harness (model settings, knob spaces, sweep grids, estimator
fits), installed as the package data of ``harness.configs``."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
