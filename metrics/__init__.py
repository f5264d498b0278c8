"""metrics: StyleGAN2-ADA's evaluation metrics (FID, KID, precision/recall, IS) with offline-first detector loading.

metric_main (registry, calc_metric, report_metric), metric_utils (options, dataset / generator features, cache),
feature_stats (accumulated features), detectors (Inception-v3 / VGG16 files), and one module per formula.
"""
