"""smart_plugin: the SMaRt score-matching regularizer (arXiv 2311.18208) and related loss plugins."""

from smart_plugin.diffgan import DiffusionGAN
from edm_bridge.gaussian import GaussianDenoiser, fit_gaussian_denoiser
from smart_plugin.options import DiffGANOptions, OptionError, OptionTypeError, SMaRtOptions
from smart_plugin.regularizer import SMaRt, draw_noise, resolve_schedule, score_matching_loss

__all__ = ['SMaRt', 'SMaRtOptions', 'DiffusionGAN', 'DiffGANOptions', 'GaussianDenoiser', 'fit_gaussian_denoiser',
           'OptionError', 'OptionTypeError', 'draw_noise', 'resolve_schedule', 'score_matching_loss']
