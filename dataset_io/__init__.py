"""dataset_io: the StyleGAN2-ADA dataset format, read and written.

reader (Dataset, ImageFolderDataset), images (which files count, header probes, decoding), labels (the one label
validator), sources (what dataset_tool.py converts: folders, zips, CIFAR-10, MNIST, LSUN, digits) and writer (the
zip or folder it writes). Snapshots name the reader `training.dataset.ImageFolderDataset` (training/dataset.py).
"""
