"""One-run GAN training of the 2-D toy (SMaRt, Xia et al., ICML 2024, Figure 2) with the image trainer's loss plugins,
used by the pull-only diagnostic (smart_plugin.toy.pull_only); the experiment trains with smart_plugin.toy.engine.

Non-saturating logistic GAN loss (StyleGAN2-ADA's), alternating one D and one G Adam step per iteration. The plugins
are used exactly as training/loss.py uses them: every D input goes through `transform_D_input` (Diffusion-GAN),
`G_penalty` adds a per-sample term to the G loss (SMaRt), and `end_of_step` runs once per iteration. The loss reports
sign(D(real)) under 'Loss/signs/real', the signal Diffusion-GAN adapts its diffusion length to.
"""

import dataclasses

import torch
import torch.nn.functional as F

from smart_plugin.toy.models import ToyDiscriminator, ToyGenerator
from torch_utils import training_stats
from training.loss_plugin import LossPlugin


@dataclasses.dataclass
class ToyGAN:
    """Networks, optimizers and plugins of one toy run."""
    G: ToyGenerator
    D: ToyDiscriminator
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    plugins: list[LossPlugin]
    cur_nimg: int = 0


def build_gan(plugins: list[LossPlugin], z_dim: int, lr_G: float, lr_D: float, betas: tuple[float, float],
              training_set: object, scale: float = 1.0) -> ToyGAN:
    """Build G, D (with the plugins' extra label width, both working in units of `scale`) and Adam optimizers;
    run every plugin's setup()."""
    G = ToyGenerator(z_dim, scale)
    D = ToyDiscriminator(sum(p.extra_c_dim for p in plugins), scale)
    for plugin in plugins:
        plugin.setup(G=G, D=D, training_set=training_set, device=torch.device('cpu'), rank=0, num_gpus=1)
    return ToyGAN(G, D, torch.optim.Adam(G.parameters(), lr=lr_G, betas=betas),
                  torch.optim.Adam(D.parameters(), lr=lr_D, betas=betas), plugins)


def run_D(gan: ToyGAN, x: torch.Tensor) -> torch.Tensor:
    """D's logits [N] of points x [N, 2, 1, 1] after every plugin's input transform."""
    c = x.new_zeros([x.shape[0], 0])
    for plugin in gan.plugins:
        x, c = plugin.transform_D_input(x, c)
    return gan.D(x, c)


def G_penalty(gan: ToyGAN, gen: torch.Tensor) -> torch.Tensor:
    """Sum of the plugins' per-sample penalties [N] (0 when idle)."""
    total = gen.new_zeros([gen.shape[0]])
    for plugin in gan.plugins:
        penalty = plugin.G_penalty(gen, gen.new_zeros([gen.shape[0], 0]))
        if penalty is not None:
            total = total + penalty
    return total


def train_step(gan: ToyGAN, real: torch.Tensor) -> dict:
    """One D step and one G step on real points [N, 2, 1, 1]; returns the two losses."""
    N = real.shape[0]
    with torch.no_grad():
        fake = gan.G(torch.randn([N, gan.G.z_dim]))
    real_logits, fake_logits = run_D(gan, real), run_D(gan, fake)
    training_stats.report('Loss/signs/real', real_logits.sign())
    loss_D = (F.softplus(fake_logits) + F.softplus(-real_logits)).mean()
    gan.opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    gan.opt_D.step()

    gen = gan.G(torch.randn([N, gan.G.z_dim]))
    loss_G = (F.softplus(-run_D(gan, gen)) + G_penalty(gan, gen)).mean()
    gan.opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    gan.opt_G.step()
    gan.cur_nimg += N
    for plugin in gan.plugins:
        plugin.end_of_step(gan.cur_nimg, N)
    return {'loss_D': loss_D.item(), 'loss_G': loss_G.item()}


@torch.no_grad()
def generate(G: ToyGenerator, n: int, seed: int) -> torch.Tensor:
    """n points [n, 2] float32 from fixed latents (seeded)."""
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    return G(z).reshape(n, 2)
