"""metrics.classifier_features: a TorchScript digit classifier / pixel extractor plugs into the metrics as a
detector (FD, PR, class histogram), the histogram KL against hand-computed values, and a classifier that learns."""

import math

import numpy as np
import pytest
import torch

from metrics import classifier_features, detectors, frechet_inception_distance, metric_utils, precision_recall
from metrics import kernel_inception_distance


def test_histogram_kl_by_hand():
    assert classifier_features.histogram_kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75), abs=1e-12)
    assert classifier_features.histogram_kl([0.0, 1.0], [0.5, 0.5]) == pytest.approx(math.log(2), abs=1e-12)
    assert classifier_features.histogram_kl([0.3, 0.7], [0.3, 0.7]) == 0.0
    assert classifier_features.histogram_kl([0.5, 0.5], [1.0, 0.0]) == float('inf')
    hist = classifier_features.class_histogram(np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0]]))
    np.testing.assert_allclose(hist, [2 / 3, 1 / 3, 0])
    with pytest.raises(ValueError, match=r'histograms must be \[K\]'):
        classifier_features.histogram_kl([0.5, 0.5], [1.0])


def test_classifier_learns_and_scripts(tmp_path):
    rnd = np.random.RandomState(0)
    labels = rnd.randint(0, 2, size=200)
    images = np.zeros([200, 1, 8, 8], np.uint8)
    images[labels == 0, :, :, :4] = 255  # class 0: left half lit; class 1: right half lit
    images[labels == 1, :, :, 4:] = 255
    images = np.clip(images.astype(np.int64) + rnd.randint(-40, 41, size=images.shape), 0, 255).astype(np.uint8)
    net, accuracy, split = classifier_features.train_classifier(images, labels, epochs=5, seed=0)
    assert accuracy == 1.0 and split == dict(train=160, test=40)
    path = classifier_features.save_torchscript(net, str(tmp_path / 'classifier.pt'))
    loaded = detectors.load_detector_file(path, torch.device('cpu'))  # TorchScript: no trust needed
    x = torch.from_numpy(images[:7]).repeat([1, 3, 1, 1])  # [7, 3, 8, 8], as run_detector passes them
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, return_features=True), net(x, return_features=True))
        probs = loaded(x)
    assert probs.shape == (7, 2)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(7))
    np.testing.assert_array_equal(probs.argmax(dim=1).numpy(), labels[:7])


def _opts(detector, dataset_zip, G):
    return metric_utils.MetricOptions(G=G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                               path=dataset_zip), device='cpu', cache=False,
                                      detector=detector, detector_vgg16=detector, num_workers=0)


def test_torchscript_detectors_drive_the_metrics(tmp_path, dataset_zip, tiny_G, metric_env):
    torch.manual_seed(0)
    net = classifier_features.DigitClassifier(res=8, num_classes=10, num_features=4).eval()
    classifier = classifier_features.save_torchscript(net, str(tmp_path / 'digits.pt'))
    pixels = classifier_features.save_torchscript(classifier_features.PixelFeatures(), str(tmp_path / 'pix.pt'))
    opts = _opts(classifier, dataset_zip, tiny_G)

    real = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                          capture_all=True).get_all()
    assert real.shape == (12, 4)  # 12 images, 4 classifier features
    fd = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=32)
    gen = metric_utils.compute_feature_stats_for_generator(opts, 'inception', dict(return_features=True),
                                                           capture_all=True, max_items=32).get_all()
    expected = frechet_inception_distance.fid_from_stats(real.mean(0), np.cov(real, rowvar=False, bias=True),
                                                         gen.mean(0), np.cov(gen, rowvar=False, bias=True))
    assert fd == pytest.approx(expected, rel=1e-6)
    precision, recall = precision_recall.compute_pr(opts, max_real=None, num_gen=32, nhood_size=3,
                                                    row_batch_size=64, col_batch_size=64)
    assert 0 <= precision <= 1 and 0 <= recall <= 1

    kl, p_gen, p_real = classifier_features.compute_class_histogram_kl(opts, num_gen=32)
    assert len(p_gen) == len(p_real) == 10 and sum(p_gen) == pytest.approx(1) and sum(p_real) == pytest.approx(1)
    assert kl == pytest.approx(classifier_features.histogram_kl(p_gen, p_real))

    pix_opts = _opts(pixels, dataset_zip, tiny_G)
    real_pix = metric_utils.compute_feature_stats_for_dataset(pix_opts, 'inception', dict(return_features=True),
                                                              capture_all=True).get_all()
    assert real_pix.shape == (12, 64) and real_pix.min() >= 0 and real_pix.max() <= 1
    kid = kernel_inception_distance.compute_kid(pix_opts, max_real=None, num_gen=32, num_subsets=5,
                                                max_subset_size=12)
    assert np.isfinite(kid)
