"""Backends: a reverse process over a timestep grid, behind one small contract (see base.py)."""

from .base import Backend, Prediction, ToyBackend
from .analytic import AnalyticDenoiser, analytic_backend
from .mlp import MLPDenoiser, load_mlp_backend

__all__ = ["Backend", "Prediction", "ToyBackend", "AnalyticDenoiser", "analytic_backend",
           "MLPDenoiser", "load_mlp_backend"]
