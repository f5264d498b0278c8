"""Feature detectors trained or built on the spot, for datasets where Inception-v3 features mean little (tiny grey
digits): a small CNN classifier and raw pixels, both saved as TorchScript so that any metric here, and
`calc_metrics.py --detector / --detector-vgg16`, use them like the official detectors (call convention of
metrics.detectors: uint8 [N, 3, H, W] in, `return_features=True` -> float [N, F], else class probabilities [N, K]).

Also the class-histogram KL of generated images (mode balance): the share of generated images that the classifier
puts into each class, against the same for the real images,

    KL(p_gen || p_real) = sum_k p_gen[k] log(p_gen[k] / p_real[k]),

0 when the classes are equally balanced in both; a generator that drops modes or favours some gets a larger value.
Classes are the classifier's argmax on both sides, so its own errors count alike for reals and fakes.
"""

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from metrics import metric_utils


class DigitClassifier(torch.nn.Module):
    """Small CNN for grey digits: [N, C, H, W] uint8 (channels averaged, area-resized to `res`) -> two 3x3 conv
    + ReLU + 2x2 max-pool stages (16, 32 channels), a `num_features`-unit linear layer (its output, before the
    ReLU, is the features), ReLU, a linear classifier head."""

    def __init__(self, res: int = 16, num_classes: int = 10, num_features: int = 64):
        super().__init__()
        if res % 4 != 0 or res < 4:
            raise ValueError(f'res={res!r}: expected a multiple of 4')
        self.res = res
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32 * (res // 4) ** 2, num_features)
        self.head = torch.nn.Linear(num_features, num_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) [N, C, H, W] -> float [N, 1, res, res] in [0, 1]."""
        x = x.to(torch.float32).mean(dim=1, keepdim=True) / 255
        if x.shape[2] != self.res or x.shape[3] != self.res:
            x = F.adaptive_avg_pool2d(x, [self.res, self.res]) if x.shape[2] > self.res else \
                F.interpolate(x, size=[self.res, self.res], mode='nearest')
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer before its ReLU: [N, num_features] (no unit is constantly 0, so the features'
        covariance is not singular through dead units, which would upset the Frechet distance)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(self.prepare(x))))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = self.features(self.prepare(x))
        if return_features:
            return features
        return torch.softmax(self.head(F.relu(features)), dim=1)  # [N, num_classes]


class PixelFeatures(torch.nn.Module):
    """Raw pixels as features: uint8 [N, C, H, W] -> channel mean / 255, flattened to [N, H * W] (KID on pixels).
    Without return_features it returns the same (there are no classes)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return (x.to(torch.float32).mean(dim=1) / 255).flatten(1)


def train_classifier(images: np.ndarray, labels: np.ndarray, test_share: float = 0.2, epochs: int = 30,
                     batch: int = 64, lr: float = 3e-3, seed: int = 0) -> tuple[DigitClassifier, float, dict]:
    """Fit a DigitClassifier on uint8 images [N, C, H, W] with int labels [N] (a random, not stratified split,
    `test_share` held out, fixed by `seed`); return (classifier in eval mode, test accuracy, split sizes)."""
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.ndim != 4 or images.shape[2] != images.shape[3] or len(labels) != len(images):
        raise ValueError(f'images {list(images.shape)} and labels {list(labels.shape)}: expected [N, C, R, R], [N]')
    if not 0 < test_share < 1:
        raise ValueError(f'test_share={test_share!r}: expected a value in (0, 1)')
    rnd = np.random.RandomState(seed)
    order = rnd.permutation(len(images))
    num_test = max(1, int(round(len(images) * test_share)))
    test_idx, train_idx = order[:num_test], order[num_test:]
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    num_classes = int(labels.max()) + 1
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DigitClassifier(res=images.shape[2] if images.shape[2] % 4 == 0 else 16, num_classes=num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            perm = torch.from_numpy(train_idx[rnd.permutation(len(train_idx))])
            for part in perm.split(batch):
                loss = F.cross_entropy(net.logits(x[part]), y[part])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = net.logits(x[torch.from_numpy(test_idx)]).argmax(dim=1)
    accuracy = float((predicted == y[torch.from_numpy(test_idx)]).float().mean())
    return net, accuracy, dict(train=len(train_idx), test=len(test_idx))


def save_torchscript(module: torch.nn.Module, path: str) -> str:
    """Script `module` (eval mode) and write it atomically as a TorchScript archive; return the path."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; metrics.detectors loads it anyway.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), buffer)
    dnnlib.util.write_atomically(path, buffer.getvalue())
    return path


def class_histogram(probs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Share of items per argmax class of probabilities (or logits) [N, K] -> float64 [K] summing to 1."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f'class probabilities must be [N, K] with N > 0, got {list(probs.shape)}')
    k = probs.shape[1] if num_classes is None else num_classes
    return np.bincount(probs.argmax(axis=1), minlength=k).astype(np.float64) / probs.shape[0]


def histogram_kl(p_gen: np.ndarray, p_real: np.ndarray) -> float:
    """KL(p_gen || p_real) in nats; classes absent from p_gen add 0; a class of p_gen absent from p_real is inf."""
    p_gen, p_real = np.asarray(p_gen, np.float64), np.asarray(p_real, np.float64)
    if p_gen.shape != p_real.shape or p_gen.ndim != 1:
        raise ValueError(f'histograms must be [K] of the same K, got {list(p_gen.shape)} and {list(p_real.shape)}')
    mask = p_gen > 0
    if np.any(p_real[mask] == 0):
        return float('inf')
    return float(np.sum(p_gen[mask] * np.log(p_gen[mask] / p_real[mask])))


def compute_class_histogram_kl(opts: metric_utils.MetricOptions, num_gen: int,
                               max_real: int | None = None) -> tuple[float, list, list]:
    """(KL(p_gen || p_real), p_gen, p_real) of opts.G against the dataset, classes from the detector `opts.detector`
    (its probabilities, i.e. called without return_features); all ranks call it, rank 0 gets the values."""
    real = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', {}, capture_all=True,
                                                          max_items=max_real).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(opts, 'inception', {}, capture_all=True,
                                                           max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan'), [], []
    p_real = class_histogram(real)
    p_gen = class_histogram(gen, real.shape[1])
    return histogram_kl(p_gen, p_real), p_gen.tolist(), p_real.tolist()
