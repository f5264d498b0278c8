"""SMaRt: the score-matching regularizer of the generator (Xia et al., "SMaRt: Improving GANs with Score Matching
Regularity", ICML 2024), as a LossPlugin.

A frozen diffusion model (a denoiser D(x; sigma) from edm_bridge, or the closed-form Gaussian of smart_plugin.gaussian)
scores noised generated images; its denoising error is added to G's loss so that G's samples move toward where the
data score points (spec/diffusion.md section 1). Per sample, with t ~ U{t_lo..t_hi}, sigma = sigma_hat(t) from the
chosen schedule, eps ~ N(0, I) and x_hat = G(z) + sigma * eps:

    eps form (paper):    L = mean_{C,H,W} (eps_pred - eps)^2 = mean_{C,H,W} (D(x_hat; sigma) - G(z))^2 / sigma^2
    x0 form (EDM code):  L = mean_{C,H,W} (D(x_hat; sigma) - G(z))^2

The two differ by 1 / sigma^2 (62,500 at sigma 0.004), so lambda is meaningful only together with its form; both are
printed at start-up. The gradient reaches G through G(z) and through x_hat; the denoiser's weights are frozen.

Scaling of lambda: the term lambda * L is added to the Gmain loss on every freq-th iteration, *without* multiplying
by freq (the paper's pseudo-code does the same), so its per-iteration average weight is lambda / freq. There is no
learning-rate correction (unlike lazy R1 / path length), because the term is folded into the Gmain step: SMaRt adds
no optimizer step of its own.
"""

import pickle
from typing import Any

import torch

from edm_bridge import checks, loading, registry, schedules
from edm_bridge.denoiser import FrozenDenoiser
from smart_plugin.gaussian import fit_gaussian_denoiser
from smart_plugin.options import OptionError, SMaRtOptions
from torch_utils import training_stats
from torch_utils.finite import NonFiniteError
from training.loss_plugin import LossPlugin

# NaN/Inf policy (README): non-finite samples are dropped from the step; a tick with more than this share of them stops
# the run, since the term would then regularize a small, biased part of the batch.
NONFINITE_LIMIT = 0.25


def score_matching_loss(denoiser: torch.nn.Module, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
                        labels: torch.Tensor | None = None, param: str = 'eps') -> torch.Tensor:
    """SMaRt loss per sample [N] of clean images x0 [N, C, H, W] at noise levels sigma [N] with noise eps (see the
    module docstring); differentiable in x0, through both the target and the denoiser's input."""
    sigma = sigma.reshape(-1, 1, 1, 1)                                        # [N, 1, 1, 1]
    x_hat = x0 + sigma * eps                                                  # [N, C, H, W]
    err = (denoiser(x_hat, sigma.reshape(-1), labels) - x0).square()         # [N, C, H, W]
    if param == 'eps':
        err = err / sigma.square()  # (x_hat - D) / sigma - eps == (x0 - D) / sigma: no alpha needed (spec 1).
    return err.flatten(1).mean(dim=1)                                         # [N]


def resolve_schedule(schedule: str | None, denoiser: torch.nn.Module,
                     entry: registry.ModelEntry | None) -> schedules.NoiseSchedule:
    """The t -> sigma map named by the option `schedule`; for None the score source's own: ADM's native DDPM
    schedule, else the registry entry's, else Karras-1000 (EDM networks, the Gaussian source)."""
    if schedule is not None:
        return schedules.parse_schedule(schedule)
    net = getattr(denoiser, 'net', denoiser)
    if isinstance(getattr(net, 'schedule', None), schedules.NoiseSchedule):
        return net.schedule
    if entry is not None:
        return schedules.get_schedule(entry.schedule)
    return schedules.get_schedule('karras')


class SMaRt(LossPlugin):
    """Adds lambda * L_score per generated sample to the Gmain loss on every freq-th iteration (module docstring)."""

    name = 'smart'

    def __init__(self, options: SMaRtOptions, denoiser: torch.nn.Module | None = None) -> None:
        if not isinstance(options, SMaRtOptions):
            raise TypeError(f'options is {type(options).__name__}; expected smart_plugin.SMaRtOptions')
        if denoiser is not None and not isinstance(denoiser, torch.nn.Module):
            raise TypeError(f'denoiser is {type(denoiser).__name__}; expected None (built from options.dpm) or a '
                            'torch.nn.Module with the edm_bridge Denoiser interface')
        self.options = options
        self.denoiser = denoiser      # FrozenDenoiser after setup().
        self.schedule = None          # schedules.NoiseSchedule after setup().
        self.sigma_grid = None        # float32 [num_steps] sigma_hat(t) on the device, after setup().
        self.step = 0                 # Iterations finished; the penalty is active when step % freq == 0.
        self.cur_nimg = 0             # Images shown before the current iteration (from end_of_step).

    def setup(self, *, G: torch.nn.Module, D: torch.nn.Module, training_set: Any, device: torch.device,
              rank: int, num_gpus: int) -> None:
        """Build and freeze the score source, check it against G, resolve t -> sigma and print one line (rank 0)."""
        opts = self.options
        if not opts.enabled:
            if rank == 0:
                print('SMaRt: off (lambda 0)')
            return
        try:
            source, entry = self._build_denoiser(G, training_set, device)
            notes = checks.check_compatible(self.denoiser, G.img_resolution, G.img_channels, G.c_dim)
        except (OSError, EOFError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError) as err:
            if isinstance(err, OptionError):
                raise
            raise OptionError('dpm', opts.dpm, f'score source {opts.dpm!r}: {err}') from err
        self.schedule = resolve_schedule(opts.schedule, self.denoiser, entry)
        if opts.t_hi >= self.schedule.num_steps:
            raise OptionError('t_hi', opts.t_hi, f'SMaRtOptions.t_hi is {opts.t_hi}; expected an integer < '
                              f'{self.schedule.num_steps}, the number of steps of schedule {self.schedule.name}')
        sigma_lo, sigma_hi = (self.schedule.sigma_hat(t) for t in (opts.t_lo, opts.t_hi))
        # float32 like the denoiser's own sigma input (FrozenDenoiser); indexed on the device without a host sync.
        self.sigma_grid = torch.from_numpy(self.schedule.sigma_grid).to(device=device, dtype=torch.float32)  # [T]
        if rank == 0:
            print(self.describe(sigma_lo, sigma_hi, source, notes))
        checks.check_sigma_band(self.denoiser, [sigma_lo, sigma_hi])

    def _build_denoiser(self, G: torch.nn.Module, training_set: Any,
                        device: torch.device) -> tuple[str, registry.ModelEntry | None]:
        """Set self.denoiser (frozen, on device); return a name for the score source and its registry entry."""
        dpm, entry = self.options.dpm, None
        if self.denoiser is not None:
            net = getattr(self.denoiser, 'net', self.denoiser)
            source = f'{type(net).__name__} (given)'
        elif dpm == 'gaussian':
            self.denoiser = fit_gaussian_denoiser(training_set)
            source = f'gaussian (per-pixel fit to {len(training_set)} images)'
        else:
            entry, _ = registry.resolve(dpm)
            if entry is not None:  # Refuse a known misfit before downloading or loading it.
                checks.check_compatible(entry, G.img_resolution, G.img_channels, G.c_dim)
            self.denoiser = loading.load_denoiser(dpm, device=device)
            source = dpm
        if not isinstance(self.denoiser, FrozenDenoiser):
            self.denoiser = FrozenDenoiser(self.denoiser)
        self.denoiser.to(device)
        return source, entry

    def describe(self, sigma_lo: float, sigma_hi: float, source: str, notes: list[str]) -> str:
        """The start-up line: lambda with its form, frequency, t band -> sigma band, score source (and notes)."""
        opts = self.options
        line = (f'SMaRt: lambda {opts.lam:g} ({opts.param} form), every {opts.freq} steps, t {opts.t_lo}..{opts.t_hi} '
                f'on {self.schedule.name}-{self.schedule.num_steps} -> sigma {sigma_lo:.4g}..{sigma_hi:.4g}, '
                f'score source {source}')
        if opts.batch is not None:
            line += f', first {opts.batch} samples per round'
        if opts.start_kimg > 0:
            line += f', from {opts.start_kimg:g} kimg'
        return line + ''.join(f'; note: {note}' for note in notes)

    def active(self) -> bool:
        """Whether this iteration gets the penalty: lambda > 0, past start_kimg, and step a multiple of freq."""
        opts = self.options
        return opts.enabled and self.cur_nimg >= opts.start_kimg * 1000 and self.step % opts.freq == 0

    def G_penalty(self, gen_img: torch.Tensor, gen_c: torch.Tensor) -> torch.Tensor | None:
        """lambda * L_score per sample [N] of the generated batch [N, C, H, W], or None when inactive (no RNG used).

        With options.batch = b < N only the first b samples are scored; their values are scaled by N / b and the
        others are 0, so the batch mean still estimates lambda * E[L_score].
        """
        if not self.active():
            return None
        assert self.denoiser is not None and self.schedule is not None, 'SMaRt.setup() must run first'
        N = gen_img.shape[0]
        b = N if self.options.batch is None else min(self.options.batch, N)
        x0 = gen_img[:b]                                                                     # [b, C, H, W]
        t = torch.randint(self.options.t_lo, self.options.t_hi + 1, [b], device=gen_img.device)  # [b]
        sigma = self.sigma_grid[t].to(gen_img.dtype)                                          # [b]
        eps = torch.randn_like(x0)                                                           # [b, C, H, W]
        label_dim = self.denoiser.label_dim
        labels = gen_c[:b, :label_dim] if label_dim > 0 else None
        loss = score_matching_loss(self.denoiser, x0, sigma, eps, labels, self.options.param)  # [b]
        loss = self._drop_nonfinite(loss, x0)
        training_stats.report('SMaRt/sigma', sigma)
        penalty = loss * self.options.lam
        if b < N:
            penalty = torch.cat([penalty * (N / b), penalty.new_zeros([N - b])])              # [N]
        return penalty

    @staticmethod
    def _drop_nonfinite(loss: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Zero the non-finite entries of the per-sample loss [b] and their gradient into x0 (a NaN sample would
        otherwise make every G gradient NaN); report 'SMaRt/nonfinite' (1 per dropped sample) and 'SMaRt/loss'."""
        finite = torch.isfinite(loss)                                                         # [b]
        if x0.requires_grad:  # torch.where selects, so NaN * 0 never happens; finite samples keep their gradient.
            x0.register_hook(lambda grad: torch.where(finite.reshape(-1, 1, 1, 1), grad, torch.zeros_like(grad)))
        training_stats.report('SMaRt/nonfinite', (~finite).to(torch.float32))
        training_stats.report('SMaRt/loss', loss[finite])
        return torch.where(finite, loss, torch.zeros_like(loss))

    def end_of_tick(self, stats: dict) -> list[str]:
        """Warn about the samples dropped this tick; stop the run when they exceed NONFINITE_LIMIT of those scored."""
        summary = stats.get('SMaRt/nonfinite')
        if summary is None or not summary.mean > 0:
            return []
        dropped = round(summary.mean * summary.num)
        message = (f'the score source ({self.options.dpm}) gave NaN/Inf for {dropped} of {summary.num} SMaRt samples '
                   f'this tick')
        if summary.mean > NONFINITE_LIMIT:
            raise NonFiniteError(f'{message}, more than the {NONFINITE_LIMIT:.0%} allowed; the score source is broken '
                                 f'for these images (check it with python -m edm_bridge info)', '--smart-dpm')
        return [f'Warning: SMaRt: {message}; they were dropped from the SMaRt term (SMaRt/nonfinite)']

    def end_of_step(self, cur_nimg: int, batch_size: int) -> None:
        """Advance the iteration counter; cur_nimg (images shown so far, this step included) gates start_kimg."""
        self.step += 1
        self.cur_nimg = int(cur_nimg)

    def state_dict(self) -> dict:
        """Step counter and image count: enough to resume the freq / start_kimg gating exactly."""
        return {'step': self.step, 'cur_nimg': self.cur_nimg}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        missing = {'step', 'cur_nimg'} - set(state)
        if missing:
            raise ValueError(f'SMaRt state lacks {sorted(missing)}; expected the dict SMaRt.state_dict() returns')
        self.step = int(state['step'])
        self.cur_nimg = int(state['cur_nimg'])

