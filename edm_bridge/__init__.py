"""edm_bridge: pretrained EDM / ADM / NCSNv2 diffusion models as frozen noise predictors."""

from edm_bridge.checks import check_compatible, check_sigma_band
from edm_bridge.denoiser import (Denoiser, FrozenDenoiser, denoised_to_eps, denoised_to_score, eps_to_denoised,
                                 eps_to_score, score_to_eps)
from edm_bridge.loading import describe, load_denoiser
from edm_bridge.registry import MODELS, ModelEntry, resolve

__all__ = ['Denoiser', 'FrozenDenoiser', 'denoised_to_eps', 'eps_to_denoised', 'denoised_to_score', 'score_to_eps',
           'eps_to_score', 'load_denoiser', 'describe', 'MODELS', 'ModelEntry', 'resolve', 'check_compatible',
           'check_sigma_band']
