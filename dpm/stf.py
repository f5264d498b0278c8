"""Stable Target Field (Xu, Tong & Jaakkola, ICLR 2023): a lower-variance denoising target from a reference batch.

Plain denoising score matching regresses D(x_tilde; sigma) on the clean image y that produced x_tilde = y + sigma n.
STF regresses it on the posterior mean of the clean image under the empirical distribution of a reference batch
{r_j} (whose first entries are the minibatch itself, so y is always a candidate):

    target_i = sum_j w_ij r_j,   w_ij = softmax_j(-||x_tilde_i - r_j||^2 / (2 sigma_i^2))      (STF eq. 6, x0 form)

No gradient flows through the target. `stf_target` streams the reference in chunks with matmul distances
||a||^2 - 2 a.b + ||b||^2 and an online log-sum-exp (running max, rescaled sums), so memory is O(N * chunk + N * D)
instead of the naive O(N * R * D); distances and sums are float64 because at small sigma the logits are huge
differences of large numbers. `stf_target_reference` is the brute-force oracle. With class labels the posterior is
restricted to references of the same class.
"""

import torch

DEFAULT_CHUNK = 256  # Reference images per chunk: [N, 256] logits, a [256, D] float64 slice.


def _check(x_noisy: torch.Tensor, sigma: torch.Tensor | float, reference: torch.Tensor,
           labels: torch.Tensor | None, ref_labels: torch.Tensor | None) -> torch.Tensor:
    """Validate shapes; return sigma as float64 [N, 1]."""
    if x_noisy.ndim != 4 or reference.ndim != 4 or x_noisy.shape[1:] != reference.shape[1:]:
        raise ValueError(f'x_noisy {list(x_noisy.shape)} and reference {list(reference.shape)}: expected [N, C, H, W] '
                         'and [R, C, H, W] with the same C, H, W')
    if reference.shape[0] < 1:
        raise ValueError('reference is empty: expected at least the minibatch itself')
    sigma = torch.as_tensor(sigma, device=x_noisy.device, dtype=torch.float64).reshape(-1, 1)
    if sigma.shape[0] == 1:
        sigma = sigma.expand(x_noisy.shape[0], 1)
    if sigma.shape[0] != x_noisy.shape[0] or not bool((sigma > 0).all()):
        raise ValueError(f'sigma has {sigma.shape[0]} entries: expected 1 or N={x_noisy.shape[0]} values > 0')
    if (labels is None) != (ref_labels is None):
        raise ValueError('labels and ref_labels: pass both (conditional STF) or neither')
    if labels is not None and (labels.shape[0] != x_noisy.shape[0] or ref_labels.shape[0] != reference.shape[0]):
        raise ValueError(f'labels {list(labels.shape)} / ref_labels {list(ref_labels.shape)}: expected one row per '
                         'image of x_noisy / reference')
    return sigma


def _same_class(labels: torch.Tensor | None, ref_labels: torch.Tensor | None) -> torch.Tensor | None:
    """[N, R] bool: reference j has the label of sample i (None when unconditional)."""
    if labels is None:
        return None
    return (labels.reshape(labels.shape[0], 1, -1) == ref_labels.reshape(1, ref_labels.shape[0], -1)).all(dim=2)


@torch.no_grad()
def stf_target(x_noisy: torch.Tensor, sigma: torch.Tensor | float, reference: torch.Tensor,
               chunk: int = DEFAULT_CHUNK, labels: torch.Tensor | None = None,
               ref_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Posterior mean E[r | x_tilde] over the reference batch, streamed in chunks of `chunk` references.

    x_noisy [N, C, H, W], sigma [N] / [N, 1, 1, 1] / scalar, reference [R, C, H, W] -> target [N, C, H, W] in
    x_noisy's dtype. labels [N, L] / ref_labels [R, L] (optional) restrict the posterior to the same class.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f'chunk={chunk!r}: expected an integer >= 1')
    sigma = _check(x_noisy, sigma, reference, labels, ref_labels)
    N = x_noisy.shape[0]
    x = x_noisy.reshape(N, -1).to(torch.float64)                   # [N, D]
    x_sq = x.square().sum(dim=1, keepdim=True)                     # [N, 1]
    inv_two_var = 0.5 / sigma.square()                             # [N, 1]
    run_max = torch.full([N, 1], -torch.inf, dtype=torch.float64, device=x.device)
    run_sum = torch.zeros([N, 1], dtype=torch.float64, device=x.device)
    acc = torch.zeros_like(x)                                      # [N, D]: sum_j exp(logit_ij - run_max_i) r_j
    for start in range(0, reference.shape[0], chunk):
        r = reference[start:start + chunk].reshape(-1, x.shape[1]).to(device=x.device, dtype=torch.float64)  # [c, D]
        dist_sq = (x_sq - 2 * (x @ r.T) + r.square().sum(dim=1)[None]).clamp_min_(0)  # [N, c]
        logits = -dist_sq * inv_two_var
        same = _same_class(labels, None if ref_labels is None else ref_labels[start:start + chunk])
        if same is not None:
            logits = logits.masked_fill(~same.to(x.device), -torch.inf)
        new_max = torch.maximum(run_max, logits.amax(dim=1, keepdim=True))
        shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)  # All masked so far: no shift.
        scale = (run_max - shift).exp()
        weights = (logits - shift).exp()                           # [N, c]
        run_sum = run_sum * scale + weights.sum(dim=1, keepdim=True)
        acc = acc * scale + weights @ r
        run_max = new_max
    if not bool((run_sum > 0).all()):
        raise ValueError('a sample has no reference of its own class; the reference batch must start with the '
                         'minibatch itself')
    return (acc / run_sum).reshape(x_noisy.shape).to(x_noisy.dtype)


@torch.no_grad()
def stf_target_reference(x_noisy: torch.Tensor, sigma: torch.Tensor | float, reference: torch.Tensor,
                         labels: torch.Tensor | None = None, ref_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Brute-force oracle of stf_target: the full [N, R, D] difference tensor and a float64 softmax."""
    sigma = _check(x_noisy, sigma, reference, labels, ref_labels)
    x = x_noisy.reshape(x_noisy.shape[0], 1, -1).to(torch.float64)               # [N, 1, D]
    r = reference.reshape(1, reference.shape[0], -1).to(torch.float64)           # [1, R, D]
    logits = -(x - r).square().sum(dim=2) / (2 * sigma.square())                 # [N, R]
    same = _same_class(labels, ref_labels)
    if same is not None:
        logits = logits.masked_fill(~same, -torch.inf)
    weights = logits.softmax(dim=1)                                              # [N, R]
    return (weights @ r[0]).reshape(x_noisy.shape).to(x_noisy.dtype)
