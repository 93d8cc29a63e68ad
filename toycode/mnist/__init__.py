"""The MNIST wing: the real digits (checksummed download), a trained UNet DDPM and classifier,
class-tilt rewards with exactly known tilted class fractions, and a 784-D mixture with exact
targets. ``toycode mnist-demo``, ``mnist-eval``, ``mnist-gmm`` and ``train-mnist`` use it."""
