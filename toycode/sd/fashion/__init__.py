"""A text-to-image latent diffusion pipeline toycode trains itself on Fashion-MNIST.

``toycode/checkpoints/fashion-sd/`` is a plain diffusers ``StableDiffusionPipeline`` folder
(``StableDiffusionPipeline.from_pretrained(folder)`` loads it with no toycode import; toycode
names it ``tiny:fashion``): a small AutoencoderKL (28×28 garments padded to 32×32, three
channels, 4×8×8 latents), a word-level CLIP tokenizer and small CLIPTextModel, a cross-attention
UNet trained with prompt dropout (classifier-free guidance works) and a DDIM scheduler config.
``fashion_classifier.pt`` is the reward and prompt-fidelity judge.

Modules: :mod:`.data` (the idx files, checksummed), :mod:`.prompts` (templates, tokenizer),
:mod:`.train` (``python -m toycode.sd.fashion train``), :mod:`.rewards` (the classifier on
decoded images), :mod:`.gates` (``python -m toycode.sd.fashion gates``), :mod:`.tradeoff` (reward
vs prompt fidelity vs UNet calls, ``python -m toycode.sd.fashion tradeoff``), :mod:`.class_value`
(the learned class value on the latents, ``python -m toycode.sd.fashion class-value``).
"""

from pathlib import Path

__all__ = [
    "PIPELINE_DIR",
    "SD3_DIR",
    "TAESD_DIR",
    "CLASSIFIER_PATH",
    "MODEL_NAME",
    "SD3_MODEL_NAME",
    "TAESD_NAME",
    "TRAINED_MODELS",
    "resolve_model",
]

_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
PIPELINE_DIR = _CHECKPOINTS / "fashion-sd"
"""The committed StableDiffusionPipeline folder."""
SD3_DIR = _CHECKPOINTS / "fashion-sd3"
"""The committed StableDiffusion3Pipeline folder (rectified flow on the same latents)."""
TAESD_DIR = _CHECKPOINTS / "fashion-taesd"
"""The committed AutoencoderTiny distilled from the pipelines' VAE (``--score-decoder``)."""
CLASSIFIER_PATH = _CHECKPOINTS / "fashion_classifier.pt"
"""The committed classifier (reward and prompt-fidelity judge)."""
MODEL_NAME = "tiny:fashion"
"""What ``toycode sd --model`` and :func:`toycode.sd.load_pipeline` call the committed folder."""
SD3_MODEL_NAME = "tiny:fashion-sd3"
"""What ``toycode sd --model`` and :func:`toycode.sd.load_pipeline` call the SD3 folder."""
TAESD_NAME = "tiny:fashion-taesd"
"""What ``--score-decoder`` calls the committed AutoencoderTiny."""
TRAINED_MODELS = {MODEL_NAME: PIPELINE_DIR, SD3_MODEL_NAME: SD3_DIR}
"""The committed pipeline folders by name."""


def resolve_model(model):
    """The folder of a committed pipeline named ``tiny:fashion`` / ``tiny:fashion-sd3`` (also
    ``fashion-sd`` / ``fashion-sd3``, the folder names); anything else is returned as given."""
    name = str(model)
    if Path(name).exists():  # a folder of that name wins over the alias
        return model
    aliases = {"fashion-sd": MODEL_NAME, "fashion-sd3": SD3_MODEL_NAME}
    return TRAINED_MODELS.get(aliases.get(name, name), model)
