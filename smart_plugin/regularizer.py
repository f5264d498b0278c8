"""SMaRt: the score-matching regularizer of the generator (Xia et al., "SMaRt: Improving GANs with Score Matching
Regularity", ICML 2024), as a LossPlugin.

A frozen denoiser D(x; sigma) (edm_bridge.factory: a diffusion model, or the closed-form Gaussian) scores noised
generated images x_hat = G(z) + sigma * eps; lambda times its denoising error, in eps form (paper) or x0 form (EDM
code), is added to G's loss on every freq-th iteration. The derivation, the scaling of lambda, the estimator options
and the statistics are in docs/smart-regularizer.md.
"""

import contextlib
import math
import pickle
from typing import Any

import torch

from edm_bridge import checks, factory, registry
from edm_bridge.denoiser import FrozenDenoiser
# QUANTISATION_SIGMA: one grey level; below it the score source's noise prediction is mostly a guess (t 25..35 on
# Karras-1000 = sigma 0.0036..0.0045 gave an eps-form loss of 1e4 and wrecked training; docs/smart-settings.md).
# Re-exported here with resolve_schedule.
from smart_plugin.band import QUANTISATION_SIGMA, resolve_band, resolve_schedule  # noqa: F401
from edm_bridge.gaussian import degenerate_fit_warning
from smart_plugin.options import PRECISIONS, OptionError, SMaRtOptions
from torch_utils import training_stats
from torch_utils.finite import NonFiniteError
from training.loss_plugin import LossPlugin

# docs/nan-policy.md: non-finite samples are dropped from the step; a tick with more than this share of them stops
# the run, since the term would then regularize a small, biased part of the batch.
NONFINITE_LIMIT = 0.25
# The first tick's lambda * SMaRt/loss above this multiple of G's adversarial loss gets a warning.
DOMINANCE_RATIO = 10.0


def score_matching_loss(denoiser: torch.nn.Module, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
                        labels: torch.Tensor | None = None, param: str = 'eps', grad: str = 'full',
                        precision: str = 'fp32') -> torch.Tensor:
    """SMaRt loss per sample [N] of clean images x0 [N, C, H, W] at noise levels sigma [N] with noise eps (see
    docs/smart-regularizer.md); differentiable in x0, through the target and (grad 'full') the denoiser's input too.
    precision 'bf16' / 'fp16' runs the denoiser under autocast (its output is cast back to x0's dtype)."""
    sigma = sigma.reshape(-1, 1, 1, 1)                                        # [N, 1, 1, 1]
    x_hat = x0 + sigma * eps                                                  # [N, C, H, W]
    with torch.no_grad() if grad == 'sds' else contextlib.nullcontext():     # sds: D(x_hat) a constant, no graph.
        if precision == 'fp32':
            denoised = denoiser(x_hat, sigma.reshape(-1), labels)
        else:
            with torch.autocast(x_hat.device.type, dtype=getattr(torch, PRECISIONS[precision])):
                denoised = denoiser(x_hat, sigma.reshape(-1), labels)
            denoised = denoised.to(x0.dtype)
    err = (denoised - x0).square()                                           # [N, C, H, W]
    if param == 'eps':
        err = err / sigma.square()  # (x_hat - D) / sigma - eps == (x0 - D) / sigma: no alpha (docs/spec/diffusion.md).
    return err.flatten(1).mean(dim=1)                                         # [N]


def draw_noise(x0: torch.Tensor, t_lo: int, t_hi: int, draws: int = 1, antithetic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer timesteps t [K b] ~ U{t_lo..t_hi} and noise eps [K b, C, H, W] for x0 [b, C, H, W], K = draws, in
    draw-major order (entry k b + i is draw k of sample i). Antithetic: draw k + K / 2 is (t, -eps) of draw k.
    With K = 1 the RNG calls are exactly those of one randint [b] and one randn_like(x0)."""
    b, shape = x0.shape[0], x0.shape[1:]
    m = draws // 2 if antithetic else draws                                  # Independent draws per sample.
    t = torch.randint(t_lo, t_hi + 1, [m * b], device=x0.device, generator=generator)          # [m b]
    eps = x0.new_empty([m * b, *shape])                                                     # [m b, C, H, W]
    if x0.ndim == 4 and not x0.is_contiguous() and x0.is_contiguous(memory_format=torch.channels_last):
        eps = eps.contiguous(memory_format=torch.channels_last)  # Fill in x0's memory order, as randn_like(x0) does.
    eps.normal_(generator=generator)
    if antithetic:
        t, eps = torch.cat([t, t]), torch.cat([eps, -eps])                   # [K b], [K b, C, H, W]
    return t, eps


def band_warning(sigma_hi: float, schedule_name: str) -> str | None:
    """A loud warning when the whole sigma band lies below one grey level (QUANTISATION_SIGMA), else None."""
    if sigma_hi >= QUANTISATION_SIGMA:
        return None
    return (f'WARNING: SMaRt: the sigma band ends at {sigma_hi:.4g}, below one grey level of 8-bit data '
            f'({QUANTISATION_SIGMA:.4g} in [-1, 1] units): the score source never saw noise this small in its data, '
            f'and the eps-form loss is divided by sigma^2. Choose a band above it, e.g. --smart-schedule=ddpm-linear '
            f'--smart-t=40,60 (sigma 0.144..0.209) instead of this band on {schedule_name}.')


def dominance_warning(weighted_loss: float, adversarial_loss: float, lam: float, param: str) -> str | None:
    """A warning when lambda * SMaRt/loss exceeds DOMINANCE_RATIO x G's adversarial loss (magnitudes), else None."""
    if not abs(weighted_loss) > DOMINANCE_RATIO * abs(adversarial_loss):
        return None
    return (f'WARNING: SMaRt: lambda x SMaRt/loss = {weighted_loss:.4g} is {abs(weighted_loss / adversarial_loss):.0f}x '
            f"G's adversarial loss ({adversarial_loss:.4g}) at the first SMaRt tick; the regularizer, not D, now "
            f'drives G. Lower --smart-lambda (now {lam:g}, {param} form) or move --smart-t / --smart-schedule to a '
            f'larger sigma.')


class SMaRt(LossPlugin):
    """Adds lambda * L_score per generated sample to the Gmain loss on every freq-th iteration
    (docs/smart-regularizer.md)."""

    name = 'smart'

    def __init__(self, options: SMaRtOptions, denoiser: torch.nn.Module | None = None) -> None:
        if not isinstance(options, SMaRtOptions):
            raise TypeError(f'options is {type(options).__name__}; expected smart_plugin.SMaRtOptions')
        if denoiser is not None and not isinstance(denoiser, torch.nn.Module):
            raise TypeError(f'denoiser is {type(denoiser).__name__}; expected None (built from options.dpm) or a '
                            'torch.nn.Module with the edm_bridge Denoiser interface')
        self.options = options
        self.denoiser = denoiser      # FrozenDenoiser after setup().
        self.band = None              # smart_plugin.band.Band after setup(): the options' band, defaults resolved.
        self.sigma_grid = None        # float32 [num_steps] sigma_hat(t) on the device, after setup().
        self.step = 0                 # Iterations finished; the penalty is active when step % freq == 0.
        self.cur_nimg = 0             # Images shown before the current iteration (from end_of_step).
        self._compared = False        # Whether a tick has compared SMaRt/loss with G's adversarial loss yet.
        self._source = None           # edm_bridge.factory.ScoreSource that preflight() loaded, if any.

    @property
    def schedule(self):
        """The resolved t -> sigma map (schedules.NoiseSchedule), None before setup()."""
        return None if self.band is None else self.band.schedule

    @property
    def t_lo(self) -> int | None:
        """The resolved band's lowest t, None before setup()."""
        return None if self.band is None else self.band.t_lo

    @property
    def t_hi(self) -> int | None:
        """The resolved band's highest t, None before setup()."""
        return None if self.band is None else self.band.t_hi

    def preflight(self, *, G: torch.nn.Module, training_set: Any) -> None:
        """Check the score source against G before the run dir exists (edm_bridge.factory, local_only): a registry
        entry by its description, a local file by loading it on the CPU, kept for setup so it is read once."""
        if not self.options.enabled or self.denoiser is not None:
            return
        try:
            self._source = factory.load_score_source(self.options.dpm, G.img_resolution, G.img_channels, G.c_dim,
                                                     local_only=True)
            if self._source is not None:
                checks.check_compatible(self._source.denoiser, G.img_resolution, G.img_channels, G.c_dim)
        except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
            raise OptionError('dpm', self.options.dpm, str(err)) from None

    def setup(self, *, G: torch.nn.Module, D: torch.nn.Module, training_set: Any, device: torch.device,
              rank: int, num_gpus: int) -> None:
        """Build and freeze the score source, check it against G, resolve the band (defaults per source,
        smart_plugin.band) and t -> sigma, and print one line (rank 0)."""
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
        self.band = resolve_band(opts.t_lo, opts.t_hi, opts.schedule, self.denoiser, entry)
        if self.t_hi >= self.schedule.num_steps:
            raise OptionError('t_hi', self.t_hi, f'SMaRtOptions.t_hi is {self.t_hi}; expected an integer < '
                              f'{self.schedule.num_steps}, the number of steps of schedule {self.schedule.name}')
        sigma_lo, sigma_hi = (self.schedule.sigma_hat(t) for t in (self.t_lo, self.t_hi))
        # float32 like the denoiser's own sigma input (FrozenDenoiser); indexed on the device without a host sync.
        self.sigma_grid = torch.from_numpy(self.schedule.sigma_grid).to(device=device, dtype=torch.float32)  # [T]
        if rank == 0:
            print(self.describe(sigma_lo, sigma_hi, source, notes))
            num_images = None if training_set is None else len(training_set)
            for warning in (band_warning(sigma_hi, self.schedule.name),
                            degenerate_fit_warning(self.denoiser, num_images)):
                if warning is not None:
                    print(warning)
        checks.check_sigma_band(self.denoiser, [sigma_lo, sigma_hi])

    def _build_denoiser(self, G: torch.nn.Module, training_set: Any,
                        device: torch.device) -> tuple[str, registry.ModelEntry | None]:
        """Set self.denoiser (frozen, on device); return a name for the score source and its registry entry."""
        if self.denoiser is not None:
            net = getattr(self.denoiser, 'net', self.denoiser)
            if not isinstance(self.denoiser, FrozenDenoiser):
                self.denoiser = FrozenDenoiser(self.denoiser)
            self.denoiser.to(device)
            return f'{type(net).__name__} (given)', None
        source = self._source or factory.load_score_source(self.options.dpm, G.img_resolution, G.img_channels,
                                                            G.c_dim, training_set=training_set, device=device)
        self.denoiser = source.denoiser.to(device)
        return source.label, source.entry

    def describe(self, sigma_lo: float, sigma_hi: float, source: str, notes: list[str]) -> str:
        """The start-up line: lambda with its form, frequency, t band -> sigma band (and, for a band or schedule not
        given, how it was chosen), score source, estimator options (draws, antithetic, grad, diagnostics, precision),
        batch cap, start (and notes)."""
        opts = self.options
        origin = f' ({self.band.origin})' if self.band.origin else ''
        line = (f'SMaRt: lambda {opts.lam:g} ({opts.param} form), every {opts.freq} steps, t {self.t_lo}..{self.t_hi} '
                f'on {self.schedule.name}-{self.schedule.num_steps} -> sigma {sigma_lo:.4g}..{sigma_hi:.4g}{origin}, '
                f'score source {source}, {opts.draws}{" antithetic" if opts.antithetic else ""} '
                f'draw{"s" if opts.draws > 1 else ""} per sample, grad {opts.grad}')
        if opts.diagnostics:
            line += ', diagnostics on'
        if opts.precision != 'fp32':
            line += f', denoiser in {opts.precision} (autocast)'
        if opts.batch is not None:
            line += f', first {opts.batch} samples per round'
        if opts.start_kimg > 0:
            line += f', from {opts.start_kimg:g} kimg'
        return line + ''.join(f'; note: {note}' for note in notes)

    def active(self) -> bool:
        """Whether this iteration gets the penalty: lambda > 0, past start_kimg, and step a multiple of freq."""
        opts = self.options
        return opts.enabled and self.cur_nimg >= opts.start_kimg * 1000 and self.step % opts.freq == 0

    def G_penalty(self, gen_img: torch.Tensor, gen_c: torch.Tensor, lam: torch.Tensor | float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor | None:
        """lambda * L_score per sample [N] of the generated batch [N, C, H, W], or None when inactive (no RNG used).

        With options.batch = b < N only the first b samples are scored; their values are scaled by N / b and the
        others are 0, so the batch mean still estimates lambda * E[L_score]. `lam` (optional: a float or [N]) replaces
        options.lam, per sample for a tensor, e.g. one lambda per run in a batch of stacked runs; options.lam > 0
        still gates.
        `generator` draws t and eps (default: torch's global RNG on the device).
        """
        if not self.active():
            return None
        assert self.denoiser is not None and self.schedule is not None, 'SMaRt.setup() must run first'
        N = gen_img.shape[0]
        b = N if self.options.batch is None else min(self.options.batch, N)
        x0 = gen_img[:b]                                                                     # [b, C, H, W]
        opts = self.options
        t, eps = draw_noise(x0, self.t_lo, self.t_hi, opts.draws, opts.antithetic, generator)  # [K b], [K b, C, H, W]
        label_dim = self.denoiser.label_dim
        labels = gen_c[:b, :label_dim] if label_dim > 0 else None
        if isinstance(lam, torch.Tensor) and lam.ndim > 0:
            lam = lam[:b]                                                                    # [b]
        penalty = self.penalty(x0, t, eps, labels, lam)                                      # [b]
        if b < N:
            penalty = torch.cat([penalty * (N / b), penalty.new_zeros([N - b])])              # [N]
        return penalty

    def penalty(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor | None = None,
                lam: torch.Tensor | float | None = None) -> torch.Tensor:
        """lambda * L per sample [b] of x0 [b, C, H, W] from given draws t [K b], eps [K b, C, H, W] (draw_noise's
        layout), each sample's K values averaged; reports the statistics. lam: None = options.lam, a float, or [b]."""
        K, b = t.shape[0] // x0.shape[0], x0.shape[0]
        if t.shape[0] != K * b or eps.shape != (K * b, *x0.shape[1:]):
            raise ValueError(f't has shape {list(t.shape)} and eps {list(eps.shape)}; expected [K * {b}] and '
                             f'[K * {b}, {", ".join(map(str, x0.shape[1:]))}] for x0 of shape {list(x0.shape)}')
        sigma = self.sigma_grid[t].to(x0.dtype)                                              # [K b]
        x0_k = x0.repeat(K, 1, 1, 1) if K > 1 else x0                                        # [K b, C, H, W]
        labels_k = labels.repeat(K, 1) if labels is not None and K > 1 else labels
        loss_k = score_matching_loss(self.denoiser, x0_k, sigma, eps, labels_k, self.options.param,
                                     self.options.grad, self.options.precision)              # [K b]
        lam = self.options.lam if lam is None else lam
        if isinstance(lam, torch.Tensor):
            lam = lam.to(loss_k.dtype).reshape(-1).repeat(K) if lam.ndim > 0 else lam        # [K b]
        # Weight each draw, then average each sample's K values (a toy batch tiled K times gives the same numbers).
        penalty = loss_k * lam if K == 1 else (loss_k * lam).reshape(K, b).mean(dim=0)      # [b]
        penalty = self._drop_nonfinite(loss_k if K == 1 else loss_k.reshape(K, b).mean(dim=0), penalty, x0)
        training_stats.report('SMaRt/sigma', sigma)
        if self.options.diagnostics and penalty.requires_grad:
            # Sample i's penalty depends on x_i only, so one pass gives every per-sample gradient.
            (grad,) = torch.autograd.grad(penalty.sum(), x0, retain_graph=True)               # [b, C, H, W]
            training_stats.report('SMaRt/grad_norm', grad.flatten(1).norm(dim=1))
        return penalty

    def wants_G_grad_norm(self) -> bool:
        """Whether the loss should report Loss/G/grad_norm this round: diagnostics on and the penalty active."""
        return self.options.diagnostics and self.active()

    @staticmethod
    def _drop_nonfinite(loss: torch.Tensor, penalty: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Zero the samples whose loss [b] is non-finite in the penalty [b] and in their gradient into x0 (a NaN
        sample would otherwise make every G gradient NaN); report 'SMaRt/nonfinite' (1 per dropped sample) and
        'SMaRt/loss' (the finite ones)."""
        finite = torch.isfinite(loss) & torch.isfinite(penalty)                               # [b]
        if x0.requires_grad:  # torch.where selects, so NaN * 0 never happens; finite samples keep their gradient.
            x0.register_hook(lambda grad: torch.where(finite.reshape(-1, 1, 1, 1), grad, torch.zeros_like(grad)))
        training_stats.report('SMaRt/nonfinite', (~finite).to(torch.float32))
        training_stats.report('SMaRt/loss', loss[finite])
        return torch.where(finite, penalty, torch.zeros_like(penalty))

    def end_of_tick(self, stats: dict) -> list[str]:
        """One line with this tick's SMaRt/loss beside G's adversarial loss (a warning the first time the weighted
        term dominates it); warn about the samples dropped this tick and stop the run when they exceed
        NONFINITE_LIMIT of those scored."""
        lines = self._loss_lines(stats)
        summary = stats.get('SMaRt/nonfinite')
        if summary is None or not summary.mean > 0:
            return lines
        dropped = round(summary.mean * summary.num)
        message = (f'the score source ({self.options.dpm}) gave NaN/Inf for {dropped} of {summary.num} SMaRt samples '
                   f'this tick')
        if summary.mean > NONFINITE_LIMIT:
            raise NonFiniteError(f'{message}, more than the {NONFINITE_LIMIT:.0%} allowed; the score source is broken '
                                 f'for these images (check it with python -m edm_bridge info)', '--smart-dpm')
        return lines + [f'Warning: SMaRt: {message}; they were dropped from the SMaRt term (SMaRt/nonfinite)']

    def _loss_lines(self, stats: dict) -> list[str]:
        loss, adversarial = stats.get('SMaRt/loss'), stats.get('Loss/G/loss')
        if loss is None or loss.num == 0 or not math.isfinite(loss.mean):
            return []
        weighted = self.options.lam * loss.mean
        line = f'SMaRt: loss {loss.mean:<9.4g} lambda x loss {weighted:<9.4g}'
        if adversarial is None or adversarial.num == 0:
            return [line]
        lines = [line + f' G adversarial {adversarial.mean:.4g}']
        if not self._compared:
            self._compared = True
            warning = dominance_warning(weighted, adversarial.mean, self.options.lam, self.options.param)
            if warning is not None:
                lines.append(warning)
        return lines

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

