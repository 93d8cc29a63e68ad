"""Backends: a reverse process over a timestep grid, behind one small contract (see base.py)."""

from .analytic import AnalyticDenoiser, analytic_backend
from .base import Backend, ModuleEps, Prediction, ToyBackend
from .mlp import MLPDenoiser
from .trained import load_trained_backend
from .unet import UNetDenoiser

__all__ = ["Backend", "ModuleEps", "Prediction", "ToyBackend",
           "AnalyticDenoiser", "analytic_backend", "MLPDenoiser", "UNetDenoiser",
           "load_trained_backend"]
