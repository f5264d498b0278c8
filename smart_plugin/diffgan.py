"""Diffusion-GAN discriminator noise (Wang et al., "Diffusion-GAN: Training GANs with Diffusion", ICLR 2023) as a
LossPlugin.

Every image D sees, real or fake, is diffused to a random step t of a forward chain of adaptive length T
(spec/diffusion.md section 6):

    x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) * noise_sd * z,   z ~ N(0, I),   alpha_bar_0 = 1,
    alpha_bar_t = prod_{s=1..t} (1 - beta_s),   beta = linspace(beta_start, beta_end, T),

so the linear betas always span beta_start..beta_end, re-spaced over the current T. D also receives t: the value
t / t_max is appended to its labels (extra_c_dim = 1, so the loop builds D with c_dim + 1 and a conditional mapping
of D takes it in), which is the paper's "full" version where D knows how noisy its input is.

t per sample comes from a small table refreshed whenever T changes: half its entries are 0 (clean images), half are
drawn from {1..T}, uniformly or with priority weights proportional to t. T follows an ADA-style probability p:
T = clip(t_min + round(p (t_max - t_min)), t_min, t_max), and every `interval` iterations
p <- clip(p + sign(E[sign D(real)] - target) * batch * interval / (ada_kimg * 1000), 0, 1).
With options.enabled False the plugin is inert (no labels added, no RNG used): bit-identical to the baseline.
"""

from typing import Any

import numpy as np
import torch

from smart_plugin.options import DiffGANOptions
from torch_utils import training_stats
from training.loss_plugin import LossPlugin

TABLE_SIZE = 64  # Entries of the t table; half are 0.
SIGNS_NAME = 'Loss/signs/real'  # The loss reports sign(D(real)) here (the ADA signal).


def diffusion_length(p: float, t_min: int, t_max: int) -> int:
    """Current chain length T = clip(t_min + round(p (t_max - t_min)), t_min, t_max) (round half to even)."""
    return int(np.clip(t_min + round(p * (t_max - t_min)), t_min, t_max))


def alpha_bar_table(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    """alpha_bar_t for t = 0..T, float64 [T + 1]: 1 at t = 0, then cumprod(1 - linspace(beta_start, beta_end, T))."""
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(1 - betas)])


class DiffusionGAN(LossPlugin):
    """Diffuses D's inputs to a random step t <= T and appends t / t_max to D's labels (module docstring)."""

    name = 'diffgan'

    def __init__(self, options: DiffGANOptions, table_size: int = TABLE_SIZE) -> None:
        if not isinstance(options, DiffGANOptions):
            raise TypeError(f'options is {type(options).__name__}; expected smart_plugin.DiffGANOptions')
        if isinstance(table_size, bool) or not isinstance(table_size, int) or table_size < 2 or table_size % 2:
            raise ValueError(f'table_size is {table_size!r}; expected an even integer >= 2')
        self.options = options
        self.table_size = table_size
        self.extra_c_dim = 1 if options.enabled else 0  # Width of t / t_max in D's labels; none when disabled.
        self.p = 0.0                                    # Adaptive strength in [0, 1]; T grows with it.
        self.T = options.t_min                          # Current chain length.
        self.step = 0                                   # Iterations finished (p is updated every `interval`).
        self.t_table = None                             # int64 [table_size] on the device, after setup().
        self.alpha_bar = None                           # float32 [T + 1] on the device.
        self.device = torch.device('cpu')
        self._signs = None                              # training_stats.Collector of sign(D(real)).

    def setup(self, *, G: torch.nn.Module, D: torch.nn.Module, training_set: Any, device: torch.device,
              rank: int, num_gpus: int) -> None:
        """Draw the first t table on `device` and start watching sign(D(real)) (collective: every rank calls it)."""
        opts = self.options
        if not opts.enabled:
            return
        self.device = torch.device(device)
        self._signs = training_stats.Collector(regex=f'^{SIGNS_NAME}$')
        if self.t_table is None:  # A resumed state (load_state_dict before setup) keeps its table.
            self._refresh()
        else:
            self._set_schedule(self.t_table)
        if rank == 0:
            print(f'Diffusion-GAN: noise_sd {opts.noise_sd:g}, T {opts.t_min}..{opts.t_max} (now {self.T}, p '
                  f'{self.p:.3f}), {opts.ts_dist} t, target {opts.target:g}, ada_kimg {opts.ada_kimg:g}, '
                  f'D labels + t/{opts.t_max}')

    def _refresh(self) -> None:
        """Redraw the t table for the current T: half 0, half from {1..T} (uniform or P(t) ~ t)."""
        half = self.table_size // 2
        if self.options.ts_dist == 'priority':
            weights = torch.arange(1, self.T + 1, dtype=torch.float64)  # [T] P(t) ~ t
            noised = torch.multinomial(weights, half, replacement=True) + 1
        else:
            noised = torch.randint(1, self.T + 1, [half])
        self._set_schedule(torch.cat([torch.zeros([half], dtype=torch.int64), noised]))

    def _set_schedule(self, t_table: torch.Tensor) -> None:
        """Install a t table and the alpha_bar of the current T on the device."""
        self.t_table = torch.as_tensor(t_table, dtype=torch.int64).to(self.device)  # [table_size]
        ab = alpha_bar_table(self.T, self.options.beta_start, self.options.beta_end)
        self.alpha_bar = torch.from_numpy(ab).to(device=self.device, dtype=torch.float32)  # [T + 1]

    def transform_D_input(self, img: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t [N, C, H, W], labels [N, c_dim + 1]) for D's input img [N, C, H, W] and labels c [N, c_dim]."""
        if not self.options.enabled:
            return img, c
        assert self.t_table is not None, 'DiffusionGAN.setup() must run first'
        N = img.shape[0]
        t = self.t_table[torch.randint(self.table_size, [N], device=self.t_table.device)].to(img.device)  # [N]
        ab = self.alpha_bar.to(img.device)[t].to(img.dtype).reshape(N, 1, 1, 1)  # [N, 1, 1, 1]
        z = torch.randn_like(img)                                               # [N, C, H, W]
        x_t = ab.sqrt() * img + (1 - ab).sqrt() * self.options.noise_sd * z     # t = 0: exactly img.
        t_label = (t.to(c.dtype) / self.options.t_max).reshape(N, 1)           # [N, 1]
        return x_t, torch.cat([c, t_label], dim=1)

    def end_of_step(self, cur_nimg: int, batch_size: int) -> None:
        """Every `interval` iterations move p by the sign of E[sign D(real)] - target; refresh the table if T moved."""
        opts = self.options
        if not opts.enabled:
            return
        self.step += 1
        if self.step % opts.interval == 0:
            self._signs.update()  # All-reduces over ranks: every rank sees the same mean.
            if self._signs.num(SIGNS_NAME) > 0:
                adjust = np.sign(self._signs.mean(SIGNS_NAME) - opts.target) * batch_size * opts.interval
                self.p = float(np.clip(self.p + adjust / (opts.ada_kimg * 1000), 0, 1))
                T = diffusion_length(self.p, opts.t_min, opts.t_max)
                if T != self.T:
                    self.T = T
                    self._refresh()
        training_stats.report0('DiffGAN/p', self.p)
        training_stats.report0('DiffGAN/T', self.T)

    def state_dict(self) -> dict:
        """p, T, the step counter and the current t table (for an exact resume)."""
        table = None if self.t_table is None else self.t_table.cpu().tolist()
        return {'p': self.p, 'T': self.T, 'step': self.step, 't_table': table}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned (before or after setup)."""
        missing = {'p', 'T', 'step', 't_table'} - set(state)
        if missing:
            raise ValueError(f'DiffusionGAN state lacks {sorted(missing)}; expected the dict state_dict() returns')
        self.p, self.T, self.step = float(state['p']), int(state['T']), int(state['step'])
        if state['t_table'] is None:  # Saved before setup(): draw a table now if setup() already ran.
            self.t_table = None
            if self._signs is not None:
                self._refresh()
            return
        table = torch.as_tensor(state['t_table'], dtype=torch.int64)
        if table.shape != (self.table_size,) or int(table.min()) < 0 or int(table.max()) > self.T:
            raise ValueError(f't_table in the DiffusionGAN state is {table.tolist()}; expected {self.table_size} '
                             f'steps in [0, T = {self.T}]')
        self._set_schedule(table)
