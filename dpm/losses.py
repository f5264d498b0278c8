"""Denoising losses of EDM (Karras et al. 2022, section 5 and Table 1) with optional STF targets and any p(sigma).

Each loss draws sigma ~ p(sigma), n ~ N(0, sigma^2 I) and returns the per-element loss

    lambda(sigma) * (D(y + n; sigma, labels, augment_labels) - target)^2      [N, C, H, W]

with target = y (plain DSM) or the Stable Target Field posterior mean over a reference batch (Xu et al. 2023;
dpm.stf). The three losses differ only in the default p(sigma) and the weight lambda(sigma):

  VPLoss   sigma = sigma_VP(t), t ~ U(eps_t, 1)        lambda = 1 / sigma^2
  VELoss   ln sigma ~ U(ln 0.02, ln 100)                lambda = 1 / sigma^2
  EDMLoss  ln sigma ~ N(-1.2, 1.2^2)                    lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2

`sigma_dist` replaces p(sigma) (e.g. a SMaRt-band mixture, dpm.sigma_dist); the weight stays a function of
sigma. Random draws, in this order, from the global RNG (or the device's): the augment pipe, sigma, n. NCSNv2Loss
is NCSNv2's own sigma^2-weighted DSM on its noise ladder. The losses are plain classes: snapshots store `describe()`
(plain data) instead of the object, so that the safe loader can read them without running code.
"""

import abc

import torch

from dpm import stf as stf_lib
from dpm.sigma_dist import LogNormalSigma, LogUniformSigma, SigmaDistribution, VPSigma
from edm_bridge.ncsnv2 import ncsnv2_sigmas


class _DenoisingLoss(abc.ABC):
    """Shared body of the three EDM losses; subclasses give the default p(sigma) and lambda(sigma)."""

    def __init__(self,
        sigma_dist: SigmaDistribution | None = None,  # p(sigma); None = the loss's own default.
        sigma_data: float = 0.5,                      # Data standard deviation (EDM weighting).
        stf: bool = False,                            # Stable Target Field: needs a reference batch per call.
        stf_chunk: int = stf_lib.DEFAULT_CHUNK,        # References per chunk of the STF posterior mean.
    ):
        if sigma_dist is not None and not isinstance(sigma_dist, SigmaDistribution):
            raise TypeError(f'sigma_dist is {type(sigma_dist).__name__}; expected a SigmaDistribution or None')
        if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not sigma_data > 0:
            raise ValueError(f'sigma_data={sigma_data!r}: expected a number > 0')
        if isinstance(stf_chunk, bool) or not isinstance(stf_chunk, int) or stf_chunk < 1:
            raise ValueError(f'stf_chunk={stf_chunk!r}: expected an integer >= 1')
        self.sigma_dist = sigma_dist if sigma_dist is not None else self.default_sigma_dist()
        self.sigma_data = float(sigma_data)
        self.stf = bool(stf)
        self.stf_chunk = stf_chunk

    @abc.abstractmethod
    def default_sigma_dist(self) -> SigmaDistribution:
        """p(sigma) when none is given."""

    @abc.abstractmethod
    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma), same shape as sigma."""

    def describe(self) -> dict:
        """Plain-data description stored in snapshots as 'loss_fn'."""
        return dict(class_name=type(self).__name__, sigma_dist=self.sigma_dist.describe(), sigma_data=self.sigma_data,
                    stf=self.stf, stf_chunk=self.stf_chunk)

    def _augment(self, images: torch.Tensor, augment_pipe, reference: torch.Tensor | None):
        """(y [N, C, H, W], augment_labels or None, augmented reference or None). With STF the whole reference is
        augmented in one call (independent draws per image) and y is its first N entries, i.e. the minibatch's
        own augmented copies, so the reference always contains the exact y that was noised."""
        N = images.shape[0]
        source = images if reference is None else reference
        if augment_pipe is None:
            augmented, augment_labels = source, None
        else:
            augmented, augment_labels = augment_pipe(source)
            augment_labels = augment_labels[:N]
        return augmented[:N], augment_labels, (None if reference is None else augmented)

    def __call__(self, net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
                 augment_pipe=None, reference: torch.Tensor | None = None,
                 reference_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-element loss [N, C, H, W] for a batch `images` [N, C, H, W] in [-1, 1].

        reference [R, C, H, W] (STF only) must start with `images`; reference_labels [R, L] its labels for a
        conditional STF (posterior restricted to the same class).
        """
        N = images.shape[0]
        if self.stf and reference is None:
            raise ValueError(f'{type(self).__name__} has stf=True: pass reference, a batch whose first {N} images are '
                             '`images`')
        if not self.stf and reference is not None:
            raise ValueError(f'reference given but {type(self).__name__} has stf=False; construct it with stf=True')
        if reference is not None and (reference.shape[0] < N or reference.shape[1:] != images.shape[1:]):
            expected = ', '.join(map(str, images.shape[1:]))
            raise ValueError(f'reference {list(reference.shape)}: expected [R >= {N}, {expected}]')
        y, augment_labels, ref = self._augment(images, augment_pipe, reference)
        sigma = self.sigma_dist.sample(N, device=images.device).reshape(-1, 1, 1, 1)  # [N, 1, 1, 1]
        n = torch.randn_like(y) * sigma
        D_yn = net(y + n, sigma, labels, augment_labels=augment_labels)
        if ref is None:
            target = y
        else:
            ref_labels = reference_labels if labels is not None else None
            if labels is not None and ref_labels is None:
                raise ValueError('conditional STF needs reference_labels (the labels of the reference batch)')
            target = stf_lib.stf_target(y + n, sigma, ref, chunk=self.stf_chunk, labels=labels, ref_labels=ref_labels)
        return self.weight(sigma) * (D_yn - target).square()


class VPLoss(_DenoisingLoss):
    """EDM's VP loss (DDPM++ training of Song et al. 2021): sigma from the VP SDE, lambda = 1 / sigma^2."""

    def default_sigma_dist(self):
        return VPSigma()

    def weight(self, sigma):
        return 1 / sigma ** 2


class VELoss(_DenoisingLoss):
    """EDM's VE loss (NCSN++ training of Song et al. 2021): log-uniform sigma, lambda = 1 / sigma^2."""

    def default_sigma_dist(self):
        return LogUniformSigma()

    def weight(self, sigma):
        return 1 / sigma ** 2


class EDMLoss(_DenoisingLoss):
    """EDM's own loss: log-normal sigma, lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (unit-variance
    effective target, EDM eq. 8 and Table 1)."""

    def default_sigma_dist(self):
        return LogNormalSigma()

    def weight(self, sigma):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2




class NCSNv2Loss:
    """NCSNv2's denoising score matching with sigma^2 weighting (its eq. 2 with lambda(sigma) = sigma^2), per element.

    sigma01 is drawn uniformly from the ladder (sigma = 2 sigma01 in [-1, 1] units), z ~ N(0, I), x = y + sigma z.
    Since D - y = sigma (sigma01 s(x01, sigma01) + z), the per-element loss 1/2 ((D - y) / sigma)^2 equals
    1/2 (sigma01 s + z)^2: summed over C, H, W it is exactly NCSNv2's per-image loss 1/2 ||sigma s + z||^2
    (EDM's VE loss weight 1/sigma^2, times 1/2).
    """

    def __init__(self,
        sigma_max: float = 50.0,            # sigma_1 of the ladder, [0, 1]-data units.
        sigma_min: float = 0.01,            # sigma_L of the ladder, [0, 1]-data units.
        num_scales: int = 232,              # L.
        sigma_dist=None,                    # Has sample(n, device) -> sigma [n], [-1, 1] units; None = the ladder.
        sigma_data: float = 0.5,            # Unused; accepted for the trainer's common loss arguments.
        stf: bool = False,                  # Stable targets are not supported for NCSNv2 (must be False).
        **unused,
    ):
        if stf:
            raise ValueError('NCSNv2Loss: stf=True is not supported; NCSNv2 trains on its own DSM target '
                             '(use an EDM, VP or VE loss for STF: train_dpm.py --arch ddpmpp, ncsnpp or adm)')
        if sigma_dist is not None and not callable(getattr(sigma_dist, 'sample', None)):
            raise TypeError(f'sigma_dist is a {type(sigma_dist).__name__}; expected None or an object with '
                            'sample(n, device) (dpm.sigma_dist)')
        self.ladder = 2 * ncsnv2_sigmas(sigma_max, sigma_min, num_scales)  # [L], [-1, 1] units
        self.sigma_dist = sigma_dist

    def describe(self) -> dict:
        """Plain-data description stored in snapshots as 'loss_fn' (p(sigma) None = the ladder of the net)."""
        return dict(class_name=type(self).__name__,
                    sigma_dist=None if self.sigma_dist is None else self.sigma_dist.describe())

    def sample_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        """sigma [n] in [-1, 1] units: uniform over the ladder (or from sigma_dist)."""
        if self.sigma_dist is not None:
            return self.sigma_dist.sample(n, device).to(torch.float32)
        return self.ladder.to(device)[torch.randint(len(self.ladder), [n], device=device)]

    def __call__(self, net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
                 augment_pipe=None, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Per-element loss [N, C, H, W] for clean images [N, C, H, W] in [-1, 1]."""
        if reference is not None:
            raise ValueError('NCSNv2Loss: reference (the STF batch) must be None; NCSNv2 does not use stable targets')
        sigma = self.sample_sigma(images.shape[0], images.device).reshape(-1, 1, 1, 1)  # [N, 1, 1, 1]
        y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
        n = torch.randn_like(y) * sigma
        D = net(y + n, sigma, labels, augment_labels=augment_labels)
        return 0.5 * ((D - y) / sigma).square()


LOSSES = {'vp': VPLoss, 've': VELoss, 'edm': EDMLoss, 'ncsnv2': NCSNv2Loss}  # --precond name -> loss class.
