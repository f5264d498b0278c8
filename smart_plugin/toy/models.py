"""MLP generator and discriminator of SMaRt's 2-D toy (Xia et al., ICML 2024, Figure 2): two hidden layers of 128
units with LeakyReLU. G emits 2-D points as [N, 2, 1, 1] "images" and carries the attributes the loss plugins
check (z_dim, c_dim, img_resolution, img_channels); D takes labels so that Diffusion-GAN can append t / t_max.
"""

import torch

HIDDEN = 128    # Units per hidden layer (paper).
SLOPE = 0.2     # LeakyReLU negative slope.


def mlp(in_dim: int, out_dim: int) -> torch.nn.Sequential:
    """in_dim -> 128 -> 128 -> out_dim with LeakyReLU between the layers."""
    return torch.nn.Sequential(torch.nn.Linear(in_dim, HIDDEN), torch.nn.LeakyReLU(SLOPE),
                               torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.LeakyReLU(SLOPE),
                               torch.nn.Linear(HIDDEN, out_dim))


class ToyGenerator(torch.nn.Module):
    """G(z): latent z [N, z_dim] -> point [N, 2, 1, 1]."""

    def __init__(self, z_dim: int = 8, scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.scale = scale      # Output units per unit of the net: lets the net work at O(1) for data of any extent.
        self.c_dim = 0
        self.img_resolution = 1
        self.img_channels = 2
        self.net = mlp(z_dim, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.net(z) * self.scale).reshape(-1, 2, 1, 1)


class ToyDiscriminator(torch.nn.Module):
    """D(x, c): point [N, 2, 1, 1] and labels [N, c_dim] -> logit [N]."""

    def __init__(self, c_dim: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.scale = scale      # Input points are divided by it (the labels are not).
        self.net = mlp(2 + c_dim, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.reshape(-1, 2) / self.scale, c], dim=1)).reshape(-1)
