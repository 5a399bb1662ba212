"""Hydra entry points for simulations (``python -m simulations.run``)."""
