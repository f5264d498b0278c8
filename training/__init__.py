"""training: the GAN trainer: networks, losses and the plugin interface, the training loop, snapshots and train.py's
options (StyleGAN2-ADA layout). The dataset reader is in dataset_io/ (training/dataset.py keeps its stored name)."""
