"""The Stable Diffusion wing: a diffusers pipeline behind the same backend contract as the toys,
tiny random-weight pipelines for offline tests, and ``toycode sd``. Needs the ``sd`` extra."""
