"""The 2-D toy of SMaRt (Xia et al., "SMaRt: Improving GANs with Score Matching Regularity", ICML 2024, Figure 2).

Data: 49 Gaussians of small variance on a 7x7 grid. GANs with MLP generator and discriminator are trained with the
same seeds and budgets: vanilla, Diffusion-GAN, SMaRt with the closed-form score of the noised mixture, and SMaRt +
Diffusion-GAN. The default study (FRONTIER) branches a vanilla control, Diffusion-GAN and SMaRt at a lambda ladder
from one trained vanilla GAN per seed. SMaRt and Diffusion-GAN are the image trainer's own LossPlugins; a 2-D point
travels through them as a 1x1 "image" with two channels, [N, 2, 1, 1].
"""

from smart_plugin.toy.experiment import FRONTIER, METHODS, PRESETS, Arm, ToyConfig, run_toy
from smart_plugin.toy.mixture import GridMixture, MixtureDenoiser

__all__ = ['FRONTIER', 'METHODS', 'PRESETS', 'Arm', 'ToyConfig', 'run_toy', 'GridMixture', 'MixtureDenoiser']
