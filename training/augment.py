"""Adaptive discriminator augmentation (ADA) from Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data".

`AugmentPipe` transforms every image that D sees, real or fake, so D cannot memorise a small training set. Each
transform runs on a sample with probability p * multiplier, where the loop adapts the buffer `p` (see
`adjust_ada_p`). The pipe is differentiable in the images: G's gradient and R1's double backward pass through it.
Stages, in order:
  1. geometric: xflip, rotate90, integer translation, isotropic scale, rotation, anisotropic scale, fractional
     translation, composed into one 3x3 matrix per sample; sampled with a 2x-oversampled bilinear warp filtered
     by the sym6 wavelet (or by exact pixel copies when only the blit transforms are on);
  2. colour: brightness, contrast, luma flip, hue rotation, saturation, composed into one 4x4 matrix;
  3. image-space filtering of 4 frequency bands; 4. additive Gaussian noise; 5. cutout.
p == 0 returns the input unchanged. A pickle of AugmentPipe stores this file's source and reruns it on load, so
the forward pass may use only this file, numpy, torch and torch_utils.
"""

import math

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

# Daubechies' least-asymmetric wavelet sym6, low-pass decomposition filter (12 published coefficients, sum sqrt(2)).
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Zero-phase half-band low-pass A(w) with A(w) + A(w + pi) = 1: the autocorrelation of the sym2 (= db2) low-pass
# filter, halved. Its dyadic cascade splits the spectrum into the octave bands of the image-space filter.
SYM2_HALFBAND = [-1 / 32, 0, 9 / 32, 16 / 32, 9 / 32, 0, -1 / 32]

# Assumed share of image power per band (lowest first): equal per octave, as for a 1/f^2 spectrum, with the lowest
# band holding DC and every coarser octave. Used to keep the expected image power when bands are re-weighted.
BAND_POWER = [10 / 13, 1 / 13, 1 / 13, 1 / 13]

_MULTIPLIERS = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast',
                'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout')
_GEOM = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac')
_BLIT = ('xflip', 'rotate90', 'xint')
_COLOR = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')

# CPU fast path: a transform whose gates no sample of the batch passed is skipped (its random numbers are still drawn,
# so the output is bit-identical to the full chain's). Off = the full chain of operators on every call. Not on CUDA,
# where asking whether any gate opened would cost a host sync per transform.
SKIP_CLOSED_GATES = True


def filter_bank(num_bands: int = 4) -> np.ndarray:
    """Zero-phase band-pass filters [num_bands, taps] for [0, pi/8], [pi/8, pi/4], [pi/4, pi/2], [pi/2, pi] (4 bands).

    Low-pass k is the cascade A(w) A(2w) ... A(2^(k-1) w); each band is the difference of successive low-passes,
    so the rows sum to a unit impulse (all gains 1 = identity).
    """
    lowpass = [np.ones(1)]
    for level in range(num_bands - 1):
        dilated = np.zeros((len(SYM2_HALFBAND) - 1) * 2 ** level + 1)
        dilated[::2 ** level] = SYM2_HALFBAND  # A(2^level w): zero insertion
        lowpass.append(np.convolve(lowpass[-1], dilated))
    taps = len(lowpass[-1])
    lowpass = [np.pad(h, (taps - len(h)) // 2) for h in lowpass]  # centre every filter in `taps`
    bands = [lowpass[-1]] + [lowpass[k] - lowpass[k + 1] for k in reversed(range(num_bands - 1))]
    return np.stack(bands)


def _mirror(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map integer pixel indices into [0, size) by mirroring at the borders (edge pixel not repeated), any distance."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index < size, index, period - index)


def _mirror_pad(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    """Reflect-pad [N, C, H, W] by any amount (torch's 'reflect' mode needs pads smaller than the image)."""
    ix = _mirror(torch.arange(-px0, x.shape[3] + px1, device=x.device), x.shape[3])
    iy = _mirror(torch.arange(-py0, x.shape[2] + py1, device=x.device), x.shape[2])
    return x.index_select(3, ix).index_select(2, iy)


def _matrix(rows: list, like: torch.Tensor) -> torch.Tensor:
    """Stack k rows of k entries (tensors [N] or numbers) into per-sample matrices [N, k, k]."""
    flat = [e if isinstance(e, torch.Tensor) else torch.full_like(like, e) for row in rows for e in row]
    return torch.stack(flat, dim=1).reshape(like.shape[0], len(rows), len(rows))


def _affine2d(a, b, c, d, tx, ty, like):
    """Homogeneous 2-D map (x, y) -> (a x + b y + tx, c x + d y + ty) per sample: [N, 3, 3]."""
    return _matrix([[a, b, tx], [c, d, ty], [0, 0, 1]], like)


def _affine3d(A: torch.Tensor, b) -> torch.Tensor:
    """Homogeneous colour map rgb -> A rgb + b, from A [N, 3, 3] and b [N] (same offset on all channels)."""
    M = torch.zeros([A.shape[0], 4, 4], dtype=A.dtype, device=A.device)
    M[:, :3, :3] = A
    M[:, :3, 3] = torch.as_tensor(b, dtype=A.dtype, device=A.device).reshape(-1, 1)
    M[:, 3, 3] = 1
    return M


class _Draws:
    """Per-sample random draws for one forward pass; with a debug percentile q every gate is open and every draw is
    the q-quantile of its distribution, so a transform can be inspected at a fixed strength.

    skip=True (the CPU fast path, see SKIP_CLOSED_GATES): `open` says False for a gate that no sample passed, and the
    caller then skips that transform, whose neutral value makes it the exact identity. Its random numbers are drawn
    all the same, so the generator's stream, and every later draw, is that of the full chain."""

    def __init__(self, batch_size: int, device: torch.device, debug_percentile: float | None, skip: bool = False):
        self.n, self.device, self.q, self.skip = batch_size, device, debug_percentile, skip

    def full(self, value: float) -> torch.Tensor:
        return torch.full([self.n], float(value), device=self.device)

    def gate(self, prob) -> torch.Tensor | None:
        """Per-sample gates [N] (bool) that open with probability `prob`; None (all open) with a debug percentile."""
        if self.q is not None:
            return None
        return torch.rand([self.n], device=self.device) < prob

    def open(self, gate: torch.Tensor | None) -> bool:
        """Whether the transform behind `gate` must run: False only when skipping and no sample's gate opened."""
        return gate is None or not self.skip or bool(gate.any())

    @staticmethod
    def select(gate: torch.Tensor | None, value: torch.Tensor, neutral: float) -> torch.Tensor:
        """`value` where `gate` is open, else `neutral`: [N]."""
        if gate is None:
            return value
        return torch.where(gate, value, torch.full_like(value, neutral))

    def integer(self, k: int) -> torch.Tensor:
        """Uniform over {0, ..., k-1}, as float [N]."""
        if self.q is not None:
            return self.full(min(math.floor(self.q * k), k - 1))
        return torch.randint(k, [self.n], device=self.device).float()

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        if self.q is not None:
            return self.full(lo + self.q * (hi - lo))
        return torch.rand([self.n], device=self.device) * (hi - lo) + lo

    def normal(self) -> torch.Tensor:
        """Standard normal [N]; the debug quantile is clamped to +-4.75 sigma so q = 0 or 1 stays finite."""
        if self.q is not None:
            q = min(max(self.q, 1e-6), 1 - 1e-6)
            return self.full(math.sqrt(2) * torch.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)).item())
        return torch.randn([self.n], device=self.device)

    def halfnormal(self) -> torch.Tensor:
        if self.q is not None:
            q = torch.tensor(min(self.q, 1 - 1e-6), dtype=torch.float64)
            return self.full(math.sqrt(2) * torch.erfinv(q).item())
        return torch.randn([self.n], device=self.device).abs()


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline: forward(images [N, C, H, W], debug_percentile=None) -> augmented images."""

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,        # Pixel blitting; xint_max: max |shift| / image size.
        scale=0, rotate=0, aniso=0, xfrac=0,                # General geometric transforms (probability multipliers).
        scale_std=0.2, rotate_max=1, aniso_std=0.2,         # log2 std of scale; max rotation (half turns); aniso.
        xfrac_std=0.125,                                    # Std of the fractional translation / image size.
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,  # Colour transforms (probability multipliers).
        brightness_std=0.2, contrast_std=0.5, hue_max=1,    # Offset std; log2 contrast std; max hue turn (half turns).
        saturation_std=1,                                   # log2 saturation std.
        imgfilter=0, imgfilter_bands=(1, 1, 1, 1),          # Band re-weighting; per-band probability multipliers.
        imgfilter_std=1,                                    # log2 std of each band's gain.
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,  # Additive noise (std of its std); cutout square / size.
    ):
        super().__init__()
        options = dict(xflip=xflip, rotate90=rotate90, xint=xint, xint_max=xint_max, scale=scale, rotate=rotate,
                       aniso=aniso, xfrac=xfrac, scale_std=scale_std, rotate_max=rotate_max, aniso_std=aniso_std,
                       xfrac_std=xfrac_std, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                       saturation=saturation, brightness_std=brightness_std, contrast_std=contrast_std,
                       hue_max=hue_max, saturation_std=saturation_std, imgfilter=imgfilter,
                       imgfilter_std=imgfilter_std, noise=noise, cutout=cutout, noise_std=noise_std,
                       cutout_size=cutout_size)
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f'AugmentPipe: {name}={value!r}, expected a finite number >= 0')
            setattr(self, name, float(value))
        bands = list(imgfilter_bands) if isinstance(imgfilter_bands, (list, tuple)) else None
        if bands is None or len(bands) != 4 or not all(isinstance(b, (int, float)) and 0 <= b < math.inf
                                                       for b in bands):
            raise ValueError(f'AugmentPipe: imgfilter_bands={imgfilter_bands!r}, expected 4 finite numbers >= 0')
        self.imgfilter_bands = [float(b) for b in bands]
        self.register_buffer('p', torch.zeros([]))                           # Probability multiplier, set by ADA.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6))        # [12], sum 1: 2x resampling filter.
        self.register_buffer('Hz_fbank', torch.tensor(filter_bank(), dtype=torch.float32))  # [4, 43] band filters.

    def forward(self, images: torch.Tensor, debug_percentile: float | None = None) -> torch.Tensor:
        """Augment float images [N, C, H, W] (nominally in [-1, 1]); same shape and dtype out.

        debug_percentile in [0, 1]: apply every enabled transform at that quantile of its distribution, ignoring p.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise TypeError(f'images: expected a float tensor [N, C, H, W], got '
                            f'{getattr(images, "dtype", type(images).__name__)} {list(getattr(images, "shape", []))}')
        if debug_percentile is not None and not (isinstance(debug_percentile, (int, float))
                                                 and 0 <= debug_percentile <= 1):
            raise ValueError(f'debug_percentile={debug_percentile!r}, expected None or a number in [0, 1]')
        if any(getattr(self, name) > 0 for name in _COLOR) and images.shape[1] not in (1, 3):
            raise ValueError(f'images: colour transforms need 1 or 3 channels, got {images.shape[1]}')
        if debug_percentile is None and not float(self.p) > 0:
            return images  # Exact identity while ADA has not switched on (one host sync per call).
        draws = _Draws(images.shape[0], images.device, debug_percentile,
                       skip=SKIP_CLOSED_GATES and images.device.type == 'cpu')
        if any(getattr(self, name) > 0 for name in _GEOM):
            M, moved = self._geometric_matrix(draws, images.shape[3], images.shape[2])
            blit_only = not any(getattr(self, name) > 0 for name in _GEOM if name not in _BLIT)
            if not blit_only:
                images = self._warp(images, M)  # Even at M = identity the warp low-passes: it always runs.
            elif moved:
                images = self._blit(images, M)
        if any(getattr(self, name) > 0 for name in _COLOR):
            C, changed = self._color_matrix(draws)
            if changed:
                images = self._apply_color(images, C)
        if self.imgfilter > 0:
            images = self._filter_bands(images, draws)
        if self.noise > 0:
            value = draws.halfnormal() * self.noise_std
            gate = draws.gate(self.noise * self.p)
            noise = torch.randn_like(images)
            if draws.open(gate):
                images = images + noise * draws.select(gate, value, 0).to(images.dtype).reshape(-1, 1, 1, 1)
        if self.cutout > 0:
            images = self._cutout(images, draws)
        return images

    def _geometric_matrix(self, draws: _Draws, width: int, height: int) -> tuple[torch.Tensor, bool]:
        """Compose the enabled geometric transforms into [N, 3, 3] matrices mapping output to input pixel positions;
        also return False when every transform was skipped (see _Draws.open), i.e. M is exactly the identity.

        Positions are in pixels from the image centre (x right, y down). The transforms apply to the image in the
        order below, so the output->input map is the product of their inverses in that same order. Each transform
        draws its value(s) and its gates in the order of the official pipeline, whether it is skipped or not.
        """
        p, one = self.p, draws.full(1)
        M = torch.eye(3, device=draws.device).repeat(draws.n, 1, 1)
        moved = False
        if self.xflip > 0:
            value = draws.integer(2)
            gate = draws.gate(self.xflip * p)
            if draws.open(gate):
                s = 1 - 2 * draws.select(gate, value, 0)
                M, moved = M @ _affine2d(s, 0, 0, 1, 0, 0, one), True
        if self.rotate90 > 0:
            value = draws.integer(4)
            gate = draws.gate(self.rotate90 * p)
            if draws.open(gate):
                # k quarter turns, like torch.rot90(img, k, dims=[2, 3]); exact cos/sin keep the map on the pixel grid.
                k = draws.select(gate, value, 0).long()
                c = misc.constant([1, 0, -1, 0], device=draws.device)[k]
                s = misc.constant([0, 1, 0, -1], device=draws.device)[k]
                M, moved = M @ _affine2d(c, -s, s, c, 0, 0, one), True
        if self.xint > 0:
            gate = draws.gate(self.xint * p)
            ux, uy = draws.uniform(-self.xint_max, self.xint_max), draws.uniform(-self.xint_max, self.xint_max)
            if draws.open(gate):
                on = draws.select(gate, one, 0)
                tx, ty = torch.round(ux * width) * on, torch.round(uy * height) * on
                M, moved = M @ _affine2d(1, 0, 0, 1, -tx, -ty, one), True
        if self.scale > 0:
            value = draws.normal() * self.scale_std
            gate = draws.gate(self.scale * p)
            if draws.open(gate):
                s = torch.exp2(draws.select(gate, value, 0))
                M, moved = M @ _affine2d(1 / s, 0, 0, 1 / s, 0, 0, one), True
        # Rotation happens before and after the anisotropic scale, each with probability 1 - sqrt(1 - p * rotate),
        # so that at least one of the two occurs with probability p * rotate.
        def rotation():
            prob = 1 - torch.sqrt(1 - torch.clamp(self.rotate * p, max=1))
            value = draws.uniform(-math.pi, math.pi) * self.rotate_max
            gate = draws.gate(prob)
            if not draws.open(gate):
                return None
            theta = draws.select(gate, value, 0)
            return _affine2d(torch.cos(theta), -torch.sin(theta), torch.sin(theta), torch.cos(theta), 0, 0, one)

        if self.rotate > 0 and (R := rotation()) is not None:
            M, moved = M @ R, True
        if self.aniso > 0:
            value = draws.normal() * self.aniso_std
            gate = draws.gate(self.aniso * p)
            if draws.open(gate):
                s = torch.exp2(draws.select(gate, value, 0))
                M, moved = M @ _affine2d(1 / s, 0, 0, s, 0, 0, one), True
        if self.rotate > 0 and (R := rotation()) is not None:
            M, moved = M @ R, True
        if self.xfrac > 0:
            gate = draws.gate(self.xfrac * p)
            nx, ny = draws.normal(), draws.normal()
            if draws.open(gate):
                on = draws.select(gate, one, 0)
                tx, ty = nx * self.xfrac_std * width * on, ny * self.xfrac_std * height * on
                M, moved = M @ _affine2d(1, 0, 0, 1, -tx, -ty, one), True
        return M, moved

    def _blit(self, images: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Apply flips, quarter turns and integer shifts by copying pixels (exact); borders are mirrored."""
        N, C, H, W = images.shape
        x = torch.arange(W, device=images.device, dtype=M.dtype) + 0.5 - W / 2  # pixel centres [W]
        y = torch.arange(H, device=images.device, dtype=M.dtype)[:, None] + 0.5 - H / 2  # [H, 1]
        M = M[:, :, :, None, None]  # [N, 3, 3, 1, 1]
        ix = _mirror(torch.round(M[:, 0, 0] * x + M[:, 0, 1] * y + M[:, 0, 2] + W / 2 - 0.5).long(), W)  # [N, H, W]
        iy = _mirror(torch.round(M[:, 1, 0] * x + M[:, 1, 1] * y + M[:, 1, 2] + H / 2 - 0.5).long(), H)
        index = (iy * W + ix).reshape(N, 1, H * W).expand(N, C, H * W)
        return images.reshape(N, C, H * W).gather(2, index).reshape(N, C, H, W)

    def _warp(self, images: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Resample [N, C, H, W] at M (output -> input pixels): mirror-pad, 2x upsample, bilinear sample, 2x downsample.

        Oversampling by 2 with the sym6 low-pass keeps the bilinear interpolation from aliasing. sym6 is not
        symmetric; its low-frequency delay `d` is compensated in the sample positions, so affine maps of smooth
        (up to linear) images are reproduced without a sub-pixel shift.
        """
        N, C, H, W = images.shape
        f = self.Hz_geom
        taps = f.numel()
        m = taps // 2 - 1  # oversampled margin consumed by the final downsampling
        d = float((taps - 1) / 2 - (torch.arange(taps, device=f.device) * f).sum())  # delay in taps (0.40 for sym6)

        # Input region read by the oversampled output window (half-widths W/2 + 3, H/2 + 3), over the whole batch.
        corners = misc.constant([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], device=M.device)
        corners = corners * misc.constant([W / 2 + 3, H / 2 + 3, 1], device=M.device)
        q = M[:, :2, :] @ corners.T  # [N, 2, 4]
        (qx0, qy0), (qx1, qy1) = q.amin(dim=(0, 2)).tolist(), q.amax(dim=(0, 2)).tolist()
        margin = taps // 4 + 1  # input pixels contaminated by the upsampler's zero padding, plus the bilinear tap
        px0, py0 = max(math.ceil(-qx0 - W / 2 + 0.5), 0) + margin, max(math.ceil(-qy0 - H / 2 + 0.5), 0) + margin
        px1, py1 = max(math.ceil(qx1 - W / 2 + 0.5), 0) + margin, max(math.ceil(qy1 - H / 2 + 0.5), 0) + margin
        x = _mirror_pad(images, px0, px1, py0, py1)
        x = upfirdn2d.upsample2d(x, f, up=2)  # [N, C, 2 (H + py0 + py1), 2 (W + px0 + px1)]

        # Oversampled output pixel centres, in output pixels from the centre, placed so that the unpadded downsampling
        # below lands output pixel k on k + 0.5 - W/2.
        ox = (torch.arange(2 * (W + m), device=M.device) + 0.5 - m - d) / 2 - W / 2  # [2 (W + m)]
        oy = (torch.arange(2 * (H + m), device=M.device)[:, None] + 0.5 - m - d) / 2 - H / 2  # [2 (H + m), 1]
        M = M[:, :, :, None, None]
        qx = M[:, 0, 0] * ox + M[:, 0, 1] * oy + M[:, 0, 2]  # input positions [N, 2 (H + m), 2 (W + m)]
        qy = M[:, 1, 0] * ox + M[:, 1, 1] * oy + M[:, 1, 2]
        # Normalised coordinates of the upsampled image (align_corners=False); the upsampler delays by d / 2 px.
        grid = torch.stack([2 * (qx + W / 2 + px0 - d / 2) / (W + px0 + px1) - 1,
                            2 * (qy + H / 2 + py0 - d / 2) / (H + py0 + py1) - 1], dim=3)
        x = grid_sample_gradfix.grid_sample(x, grid.to(x.dtype))  # [N, C, 2 (H + m), 2 (W + m)]
        return upfirdn2d.upfirdn2d(x, f, down=2)  # [N, C, H, W]

    def _color_matrix(self, draws: _Draws) -> tuple[torch.Tensor, bool]:
        """Compose the enabled colour transforms into [N, 4, 4] matrices acting on homogeneous (r, g, b, 1); also
        return False when every transform was skipped (see _Draws.open), i.e. C is exactly the identity."""
        p, dev = self.p, draws.device
        eye = misc.constant(np.eye(3), device=dev)
        luma = misc.constant(np.full([3, 3], 1 / 3), device=dev)  # v v^T for the unit luma axis v = (1, 1, 1) / sqrt(3)
        cross = misc.constant(np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3), device=dev)  # [v]_x
        C = torch.eye(4, device=dev).repeat(draws.n, 1, 1)
        changed = False

        def apply(A, b=0):
            return _affine3d(A.expand(draws.n, 3, 3), b) @ C

        if self.brightness > 0:
            value = draws.normal() * self.brightness_std
            gate = draws.gate(self.brightness * p)
            if draws.open(gate):
                C, changed = apply(eye, draws.select(gate, value, 0)), True
        if self.contrast > 0:
            value = draws.normal() * self.contrast_std
            gate = draws.gate(self.contrast * p)
            if draws.open(gate):
                c = torch.exp2(draws.select(gate, value, 0))
                C, changed = apply(eye * c.reshape(-1, 1, 1)), True
        if self.lumaflip > 0:  # reflect through the plane orthogonal to the luma axis: gray levels invert
            value = draws.integer(2)
            gate = draws.gate(self.lumaflip * p)
            if draws.open(gate):
                i = draws.select(gate, value, 0).reshape(-1, 1, 1)
                C, changed = apply(eye - 2 * luma * i), True
        if self.hue > 0:  # rotation about the luma axis (Rodrigues)
            value = draws.uniform(-math.pi, math.pi) * self.hue_max
            gate = draws.gate(self.hue * p)
            if draws.open(gate):
                theta = draws.select(gate, value, 0).reshape(-1, 1, 1)
                C, changed = apply(luma + (eye - luma) * torch.cos(theta) + cross * torch.sin(theta)), True
        if self.saturation > 0:  # scale the chroma, i.e. the component orthogonal to the luma axis
            value = draws.normal() * self.saturation_std
            gate = draws.gate(self.saturation * p)
            if draws.open(gate):
                s = torch.exp2(draws.select(gate, value, 0))
                C, changed = apply(luma + (eye - luma) * s.reshape(-1, 1, 1)), True
        return C, changed

    @staticmethod
    def _apply_color(images: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Apply colour matrices C [N, 4, 4]; a 1-channel image is treated as gray (x, x, x) and keeps its luma."""
        N, channels, H, W = images.shape
        C = C.to(images.dtype)
        if channels == 3:
            return (C[:, :3, :3] @ images.reshape(N, 3, H * W) + C[:, :3, 3:]).reshape(N, 3, H, W)
        gain = C[:, :3, :3].sum(dim=2).mean(dim=1)  # luma of A (1, 1, 1)
        return images * gain.reshape(N, 1, 1, 1) + C[:, :3, 3].mean(dim=1).reshape(N, 1, 1, 1)

    def _filter_bands(self, images: torch.Tensor, draws: _Draws) -> torch.Tensor:
        """Scale each frequency band by 2^N(0, imgfilter_std^2), renormalised to keep the expected image power."""
        N, C, H, W = images.shape
        bands = []  # (band, value, gate)
        for band, multiplier in enumerate(self.imgfilter_bands):
            if multiplier > 0:
                value = draws.normal() * self.imgfilter_std
                bands.append((band, value, draws.gate(self.imgfilter * multiplier * self.p)))
        if not any(draws.open(gate) for _, _, gate in bands):
            # All gains 1: the bank's rows sum to the unit impulse exactly (in float32 too), so the filter would be
            # the identity.
            return images
        power = misc.constant(BAND_POWER, device=images.device)
        gains = torch.ones([N, len(self.imgfilter_bands)], device=images.device)  # [N, bands]
        for band, value, gate in bands:
            t = torch.ones_like(gains)
            t[:, band] = torch.exp2(draws.select(gate, value, 0))
            gains = gains * t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()
        h = (gains @ self.Hz_fbank).to(images.dtype)  # per-sample zero-phase filter [N, taps]
        taps = h.shape[1]
        x = _mirror_pad(images, taps // 2, taps // 2, taps // 2, taps // 2).reshape(1, N * C, H + taps - 1, -1)
        h = h.repeat_interleave(C, dim=0)  # one depthwise filter per (sample, channel)
        x = conv2d_gradfix.conv2d(input=x, weight=h[:, None, None, :], groups=N * C)  # along W
        x = conv2d_gradfix.conv2d(input=x, weight=h[:, None, :, None], groups=N * C)  # along H
        return x.reshape(N, C, H, W)

    def _cutout(self, images: torch.Tensor, draws: _Draws) -> torch.Tensor:
        """Zero a square of side cutout_size * image size at a uniform random centre."""
        N, _, H, W = images.shape
        value = draws.full(self.cutout_size)
        gate = draws.gate(self.cutout * self.p)
        cx, cy = draws.uniform(0, 1).reshape(N, 1, 1, 1), draws.uniform(0, 1).reshape(N, 1, 1, 1)
        if not draws.open(gate):
            return images
        size = draws.select(gate, value, 0).reshape(N, 1, 1, 1)
        x = (torch.arange(W, device=images.device) + 0.5) / W
        y = (torch.arange(H, device=images.device)[:, None] + 0.5) / H
        keep = ((x - cx).abs() >= size / 2) | ((y - cy).abs() >= size / 2)  # [N, 1, H, W]
        return images * keep.to(images.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# --augpipe presets (docs/spec/stylegan2-ada.md 3.5): each names its transforms with multiplier 1.

_blit = dict(xflip=1, rotate90=1, xint=1)
_geom = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
augpipe_specs = {
    'blit': _blit, 'geom': _geom, 'color': _color,
    'filter': dict(imgfilter=1), 'noise': dict(noise=1), 'cutout': dict(cutout=1),
    'bg': {**_blit, **_geom},
    'bgc': {**_blit, **_geom, **_color},
    'bgcf': {**_blit, **_geom, **_color, 'imgfilter': 1},
    'bgcfn': {**_blit, **_geom, **_color, 'imgfilter': 1, 'noise': 1},
    'bgcfnc': {**_blit, **_geom, **_color, 'imgfilter': 1, 'noise': 1, 'cutout': 1},
}


def adjust_ada_p(p: float, signs_real_mean: float, target: float, batch_size: int, interval: int,
                 ada_kimg: float) -> float:
    """One ADA update: p + sign(E[sign D(real)] - target) * batch_size * interval / (ada_kimg * 1000), floored at 0.

    There is no upper clamp (p may exceed 1, as in the official code).
    """
    for name, value in (('p', p), ('signs_real_mean', signs_real_mean), ('target', target)):
        if not math.isfinite(float(value)):
            raise ValueError(f'adjust_ada_p: {name}={value!r}, expected a finite number')
    for name, value in (('batch_size', batch_size), ('interval', interval), ('ada_kimg', ada_kimg)):
        if not float(value) > 0:
            raise ValueError(f'adjust_ada_p: {name}={value!r}, expected a number > 0')
    # Deferred: AugmentPipe pickles carry this module's source, which must import only what NVIDIA's tree has.
    from training.ada_controller import next_p
    return next_p(p, signs_real_mean, target, batch_size, interval, ada_kimg, clamp='floor')
