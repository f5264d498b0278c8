"""Digit metrics of a generator in the features of a small digit classifier (metrics/classifier_features.py), for
datasets like MNIST where Inception-v3 features mean little: the classifier is trained on the labelled dataset and
saved as a TorchScript detector, and every metric here uses it in place of Inception and VGG16.

Metrics (`evaluate_generator`): FD (Frechet distance of the penultimate features, Heusel et al. 2017), KID
(Binkowski et al. 2018), precision / recall (k = 3, Kynkaanniemi et al. 2019), the class-histogram KL of generated
images against the reals, and the share of generated images the classifier labels with probability >= 0.9
("recognisable"). FD, KID and PR equal calc_metrics.py's fid/kid/pr at the same number of generated images, seed and
detector (fid2k_full, kid2k_full, pr2k3_full at num_gen=2000): the same generated images, real images and formulas
(precision / recall in float32 on the CPU, where calc_metrics uses float16 on CUDA).
"""

import dataclasses

import numpy as np
import torch

from dataset_io.reader import ImageFolderDataset
from metrics import classifier_features, detectors, frechet_inception_distance, kernel_inception_distance
from metrics import metric_utils, precision_recall
from torch_utils import dataset_classes

RECOGNISABLE_P = 0.9  # A generated digit is "recognisable" when the classifier's top class has at least this prob.
METRIC_KEYS = ('fd', 'kid', 'precision', 'recall', 'class_kl', 'recognisable')
KID_SUBSETS, KID_SUBSET_SIZE, PR_NHOOD = 100, 1000, 3  # As calc_metrics' kid*_full and pr*3_full.


@dataclasses.dataclass
class DetectorInfo:
    """What train_detector did: held-out accuracy, split sizes, the resolution it was trained at, where it went."""
    path: str
    accuracy: float
    train: int
    test: int
    resolution: int
    epochs: int
    seed: int


def read_labelled(data: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, C, H, W], int64 [N] class) of a dataset zip or folder with class labels (dataset.json)."""
    dataset = ImageFolderDataset(path=data, use_labels=True)  # Refuses, naming the file, a dataset without labels.
    try:
        if dataset.label_dim < 2:
            raise ValueError(f'{data}: has labels of dim {dataset.label_dim}; the digit classifier needs class labels '
                             f'(at least 2 classes), e.g. a zip written by dataset_tool.py --source=mnist5k')
        images = np.stack([dataset[i][0] for i in range(len(dataset))])
        labels = np.array([int(np.argmax(dataset.get_label(i))) for i in range(len(dataset))], np.int64)
    finally:
        dataset.close()
    return images, labels


def train_detector(data: str, out: str, seed: int = 0, epochs: int = 30, test_share: float = 0.2) -> DetectorInfo:
    """Train the digit classifier on the labelled dataset `data` (a fixed random split by `seed`, `test_share` held
    out) and save it to `out` as a TorchScript detector; return its held-out accuracy and what it was trained on."""
    images, labels = read_labelled(data)
    net, accuracy, split = classifier_features.train_classifier(images, labels, test_share=test_share, epochs=epochs,
                                                                seed=seed)
    classifier_features.save_torchscript(net, out)
    return DetectorInfo(path=out, accuracy=accuracy, train=split['train'], test=split['test'],
                        resolution=int(images.shape[2]), epochs=epochs, seed=seed)


def detector_resolution(path: str) -> int | None:
    """The resolution a digit-classifier detector was trained at (its `res`), or None for other detectors."""
    module = detectors.load_detector_file(path, torch.device('cpu'))
    res = getattr(module, 'res', None)
    return int(res) if isinstance(res, int) else None


def check_detector(path: str, resolution: int) -> None:
    """Raise ValueError naming the detector when it is a digit classifier trained at another resolution."""
    res = detector_resolution(path)
    if res is not None and res != resolution:
        raise ValueError(f'{path}: this detector was trained on {res}x{res} digits, but the images are '
                         f'{resolution}x{resolution}; train one on the run\'s dataset with python -m '
                         f'metrics.train_classifier --data=ZIP --out=PATH.pt')


def metric_options(G, data: str, detector: str, seed: int = 0, device='cpu') -> metric_utils.MetricOptions:
    """MetricOptions with the classifier as both detectors, the dataset as calc_metrics' *_full metrics read it."""
    # The stored class name: the statistics cache is keyed by these kwargs, shared with calc_metrics.py.
    dataset_kwargs = dict(class_name=dataset_classes.IMAGE_FOLDER_DATASET, path=data, use_labels=G.c_dim != 0,
                          resolution=G.img_resolution, max_size=None, xflip=False)
    return metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, device=device, detector=detector,
                                      detector_vgg16=detector, random_seed=seed, num_workers=0)


def _generated(opts: metric_utils.MetricOptions, num_gen: int, **stats_kwargs):
    """Detector outputs of num_gen generated images under calc_metric's seeding (the same images as calc_metrics)."""
    with torch.random.fork_rng(devices=[opts.device] if opts.device.type == 'cuda' else []):
        torch.manual_seed(opts.random_seed)
        return metric_utils.compute_feature_stats_for_generator(opts, 'inception', stats_kwargs.pop('detector_kwargs'),
                                                                max_items=num_gen, **stats_kwargs)


def recognisable_share(probs: np.ndarray, threshold: float = RECOGNISABLE_P) -> float:
    """Share of rows of class probabilities [N, K] whose largest probability is >= threshold."""
    return float(np.mean(np.asarray(probs).max(axis=1) >= threshold))


@torch.no_grad()
def evaluate_generator(G, data: str, detector: str, num_gen: int = 2000, seed: int = 0, device='cpu') -> dict:
    """{fd, kid, precision, recall, class_kl, recognisable} of generator G against the dataset `data`, all in the
    features / classes of the TorchScript digit classifier `detector`, on num_gen images drawn from `seed`."""
    check_detector(detector, G.img_resolution)
    opts = metric_options(G, data, detector, seed, device)
    features = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', features, capture_all=True,
                                                          capture_mean_cov=True)
    real_probs = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', {}, capture_all=True).get_all()
    gen = _generated(opts, num_gen, detector_kwargs=features, capture_all=True, capture_mean_cov=True)
    gen_probs = _generated(opts, num_gen, detector_kwargs={}, capture_all=True).get_all()
    fd = frechet_inception_distance.fid_from_stats(*real.get_mean_cov(), *gen.get_mean_cov())
    kid = kernel_inception_distance.kid_from_features(real.get_all(), gen.get_all(), KID_SUBSETS, KID_SUBSET_SIZE,
                                                      seed=seed)
    real_pr = real.get_all_torch()[:num_gen]  # pr*_full: as many reals as generated images (float32, on the CPU).
    precision, recall = precision_recall.pr_from_features(real_pr, gen.get_all_torch(), PR_NHOOD, num_gen, num_gen)
    p_real = classifier_features.class_histogram(real_probs)
    p_gen = classifier_features.class_histogram(gen_probs, real_probs.shape[1])
    return dict(fd=fd, kid=kid, precision=precision, recall=recall,
                class_kl=classifier_features.histogram_kl(p_gen, p_real),
                recognisable=recognisable_share(gen_probs), p_gen=p_gen.tolist())
