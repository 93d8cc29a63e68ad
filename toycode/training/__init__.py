"""Training toycode's own small models: the 2-D denoisers and the learned soft values."""
