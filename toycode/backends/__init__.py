"""Backends: a reverse process over a timestep grid, behind one small contract (see base.py)."""

from ..core.backend import Backend, Prediction
from .analytic import AnalyticDenoiser, analytic_backend
from .base import ModuleEps, ToyBackend
from .mlp import MLPDenoiser
from .trained import load_trained_backend
from .unet import UNetDenoiser

__all__ = [
    "Backend",
    "ModuleEps",
    "Prediction",
    "ToyBackend",
    "AnalyticDenoiser",
    "analytic_backend",
    "MLPDenoiser",
    "UNetDenoiser",
    "load_trained_backend",
]
