"""stage=single: the single-GAN baseline, one DCGAN from noise to (image, mask) pairs.

Trained like Stage I (`stages/mask.py`, the same `NoiseGANStage`) on the training split's
image/mask pairs, at a budget comparable to Stage I + Stage II (`profile.single.iterations`).
"""

from omegaconf import DictConfig

from synthmed_lightning.models.single_gan import SingleGAN
from synthmed_lightning.stages.mask import NoiseGANStage
from synthmed_lightning.stages.training import train_stage


def run_single(cfg: DictConfig) -> dict:
    return train_stage(cfg, NoiseGANStage(SingleGAN))
