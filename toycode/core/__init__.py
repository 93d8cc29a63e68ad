"""The algorithm: the (α, σ) process, the backend contract, the blockwise sampler and its values,
gradient guidance, search loops and the method records. Imports nothing above ``toycode.utils``."""
