"""fewstep: few-step sampling for diffusion models."""
__version__ = "0.1.0"
