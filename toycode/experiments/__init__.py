"""Experiments on the toys: the one-call API, the demo, tradeoff sweeps, plots, the notebook
explorer and the value study."""
