"""SynthMed Lightning: dual-GAN synthetic retinal images as a Lightning + Hydra framework."""

__version__ = "0.1.0"
