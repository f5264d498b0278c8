"""Diffusion-GAN discriminator noise (Wang et al., "Diffusion-GAN: Training GANs with Diffusion", ICLR 2023) as a
LossPlugin, following the released diffusion-stylegan2 (docs/spec/diffusion.md section 6).

Every image D sees, real or fake, is diffused to a random step t of a forward chain of adaptive length T (paper eq. 3):

    x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) * noise_sd * z,   z ~ N(0, I),   alpha_bar_0 = 1,

with alpha_bar from the beta schedule re-spaced over the current T (smart_plugin.diffgan_betas; linear 1e-4..0.02 by
default). D also receives t, the paper's "full" version: the raw integer t (0..T) is appended to its labels, as
released, or t / t_max with t_embed 'scaled' (extra_c_dim = 1, so the loop builds D with c_dim + 1 and a conditional
mapping of D takes it in).

t per sample comes from a 64-entry table: 32 entries 0 (clean images) and 32 drawn from {1..T}, uniformly or with
priority weights P(t) ~ t - 1 (paper eq. 11; so P(1) = 0). T follows an ADA-style probability p:
T = clip(t_min + round(p (t_max - t_min)), t_min, t_max), and every `interval` iterations

    p <- clip(p + sign(E[sign D(real)] - target) * batch * interval / (ada_kimg * 1000), 0, 1),

ADA's rule with clamp 'unit' (training/ada_controller.py), after which T is recomputed and the table redrawn,
whether or not T moved (as released; a table drawn once per T would show D only 32 noise levels for as long as T
stays put). With ada_augpipe set, an ADA pipeline runs on D's inputs before the diffusion with probability
min(p, ada_maxp), the release's --aug=ada coupling.
With options.enabled False the plugin is inert (no labels added, no RNG used): bit-identical to the baseline.
"""

from typing import Any

import numpy as np
import torch

from smart_plugin import diffgan_betas
from smart_plugin.options import DiffGANOptions, OptionError
from torch_utils import training_stats
from training.ada_controller import AdaController
from training.loss_plugin import LossPlugin

TABLE_SIZE = 64     # Entries of the t table; half are 0 (the release's t_epl).
SIGNS_NAME = 'Loss/signs/real'  # The loss reports sign(D(real)) here (the ADA signal).
STATE_VERSION = 2   # 2: raw or scaled t per options.t_embed; 1 (no 'version' key): t / t_max.


def diffusion_length(p: float, t_min: int, t_max: int) -> int:
    """Current chain length T = clip(t_min + round(p (t_max - t_min)), t_min, t_max) (round half to even)."""
    return int(np.clip(t_min + round(p * (t_max - t_min)), t_min, t_max))


def t_weights(T: int, ts_dist: str) -> torch.Tensor:
    """Unnormalised P(t) for t = 1..T, float64 [T]: t - 1 for 'priority' (paper eq. 11 as released), 1 for 'uniform'."""
    if ts_dist == 'priority':
        return torch.arange(T, dtype=torch.float64)
    return torch.ones([T], dtype=torch.float64)


class DiffusionGAN(LossPlugin):
    """Diffuses D's inputs to a random step t <= T and appends t (or t / t_max) to D's labels (module docstring)."""

    name = 'diffgan'

    def __init__(self, options: DiffGANOptions, table_size: int = TABLE_SIZE) -> None:
        if not isinstance(options, DiffGANOptions):
            raise TypeError(f'options is {type(options).__name__}; expected smart_plugin.DiffGANOptions')
        if isinstance(table_size, bool) or not isinstance(table_size, int) or table_size < 2 or table_size % 2:
            raise ValueError(f'table_size is {table_size!r}; expected an even integer >= 2')
        self.options = options
        self.table_size = table_size
        self.extra_c_dim = 1 if options.enabled else 0  # Width of t in D's labels; none when disabled.
        self.ada = AdaController(options.target, options.interval, options.ada_kimg, clamp='unit')  # Holds p.
        self.T = options.t_min                          # Current chain length.
        self.step = 0                                   # Iterations finished (p is updated every `interval`).
        self.t_table = None                             # int64 [table_size] on the device, after setup().
        self.alpha_bar = None                           # float32 [T + 1] on the device.
        self.augment_pipe = None                        # ADA pipeline (options.ada_augpipe), after setup().
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
        if opts.ada_augpipe is not None:
            from training.augment import AugmentPipe, augpipe_specs  # Deferred: only coupled ADA needs it.
            self.augment_pipe = AugmentPipe(**augpipe_specs[opts.ada_augpipe]).train().requires_grad_(False)
            self.augment_pipe.to(self.device)
        if self.t_table is None:  # A resumed state (load_state_dict before setup) keeps its table.
            self._refresh()
        else:
            self._set_schedule(self.t_table)
        if rank == 0:
            ada = f', ADA {opts.ada_augpipe} at p_aug = min(p, {opts.ada_maxp:g})' if opts.ada_augpipe else ''
            t_in = 'raw t' if opts.t_embed == 'raw' else f't/{opts.t_max}'
            print(f'Diffusion-GAN: noise_sd {opts.noise_sd:g}, {opts.beta_schedule} betas, T {opts.t_min}..'
                  f'{opts.t_max} (now {self.T}, p {self.p:.3f}), {opts.ts_dist} t, target {opts.target:g}, '
                  f'ada_kimg {opts.ada_kimg:g}, D labels + {t_in}{ada}')

    @property
    def p(self) -> float:
        """Adaptive strength in [0, 1]; T grows with it (held by self.ada)."""
        return self.ada.p

    @p.setter
    def p(self, value: float) -> None:
        self.ada.p = float(value)

    @property
    def p_aug(self) -> float:
        """Probability of the coupled ADA pipeline: min(p, ada_maxp) (0 without ada_augpipe)."""
        return min(self.p, self.options.ada_maxp) if self.options.ada_augpipe is not None else 0.0

    def _refresh(self) -> None:
        """T from p, then a fresh t table for it: half 0, half from {1..T} with t_weights (the release's update_T)."""
        opts = self.options
        self.T = diffusion_length(self.p, opts.t_min, opts.t_max)
        half = self.table_size // 2
        noised = torch.multinomial(t_weights(self.T, opts.ts_dist), half, replacement=True) + 1  # [half] in 1..T
        self._set_schedule(torch.cat([torch.zeros([half], dtype=torch.int64), noised]))

    def _set_schedule(self, t_table: torch.Tensor) -> None:
        """Install a t table, the alpha_bar of the current T and the ADA probability on the device."""
        opts = self.options
        self.t_table = torch.as_tensor(t_table, dtype=torch.int64).to(self.device)  # [table_size]
        ab = diffgan_betas.alpha_bar(opts.beta_schedule, self.T, opts.beta_start, opts.beta_end)  # [T + 1]
        self.alpha_bar = ab.to(self.device)
        if self.augment_pipe is not None:
            self.augment_pipe.p.copy_(torch.as_tensor(self.p_aug))

    def transform_D_input(self, img: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t [N, C, H, W], labels [N, c_dim + 1]) for D's input img [N, C, H, W] and labels c [N, c_dim]."""
        if not self.options.enabled:
            return img, c
        assert self.t_table is not None, 'DiffusionGAN.setup() must run first'
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        N = img.shape[0]
        t = self.t_table[torch.randint(self.table_size, [N], device=self.t_table.device)].to(img.device)  # [N]
        ab = self.alpha_bar.to(img.device)[t].reshape(N, 1, 1, 1)             # [N, 1, 1, 1]
        noise = torch.randn_like(img) * self.options.noise_sd                 # [N, C, H, W]
        x_t = (ab.sqrt() * img + (1 - ab).sqrt() * noise).to(img.dtype)      # Eq. 3; t = 0: exactly img.
        t_label = t.to(c.dtype) if self.options.t_embed == 'raw' else t.to(c.dtype) / self.options.t_max
        return x_t, torch.cat([c, t_label.reshape(N, 1)], dim=1)

    def end_of_step(self, cur_nimg: int, batch_size: int) -> None:
        """Every `interval` iterations move p by the sign of E[sign D(real)] - target, then redraw T and the table."""
        opts = self.options
        if not opts.enabled:
            return
        self.step += 1
        if self.step % opts.interval == 0:
            self._signs.update()  # All-reduces over ranks: every rank sees the same mean.
            if self._signs.num(SIGNS_NAME) > 0:
                self.ada.update(self._signs.mean(SIGNS_NAME), batch_size)
            self._refresh()
        training_stats.report0('DiffGAN/p', self.p)
        training_stats.report0('DiffGAN/T', self.T)
        if opts.ada_augpipe is not None:
            training_stats.report0('DiffGAN/p_aug', self.p_aug)

    def state_dict(self) -> dict:
        """p, T, the step counter, the current t table and the t input form (for an exact resume)."""
        table = None if self.t_table is None else self.t_table.cpu().tolist()
        return {'version': STATE_VERSION, 'p': self.p, 'T': self.T, 'step': self.step, 't_table': table,
                't_embed': self.options.t_embed}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned (before or after setup); also a version-1 state (no 'version'), whose D
        was trained on t / t_max, for runs with t_embed 'scaled'."""
        version = state.get('version', 1) if isinstance(state, dict) else None
        if version not in (1, STATE_VERSION):
            raise ValueError(f'DiffusionGAN state version is {version!r}; expected 1 (no version key) or '
                             f'{STATE_VERSION} (a dict from DiffusionGAN.state_dict())')
        keys = {'p', 'T', 'step', 't_table'} | ({'t_embed'} if version == STATE_VERSION else set())
        missing = keys - set(state)
        if missing:
            raise ValueError(f'DiffusionGAN state lacks {sorted(missing)}; expected the dict state_dict() returns')
        saved_embed = state['t_embed'] if version == STATE_VERSION else 'scaled'
        if saved_embed != self.options.t_embed:
            old = ' (a snapshot from before raw-t conditioning)' if version == 1 else ''
            raise OptionError('t_embed', self.options.t_embed, f"the DiffusionGAN state{old} was trained with D's t "
                              f"input {saved_embed!r}, this run has t_embed {self.options.t_embed!r}; resume with "
                              f"t_embed {saved_embed!r} (train.py --diffgan-t-embed={saved_embed}) or start afresh")
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
