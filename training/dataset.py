"""The name snapshots store for the dataset reader: `training.dataset.ImageFolderDataset`, as NVIDIA's StyleGAN2-ADA
and StyleGAN3 write it into `training_set_kwargs`. The reader itself lives in dataset_io/reader.py; this module only
re-exports it so that the stored name (and pickles of the classes) keep resolving."""

from dataset_io.reader import Dataset, ImageFolderDataset

__all__ = ['Dataset', 'ImageFolderDataset']
