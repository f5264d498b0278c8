"""training: networks, datasets, losses and the training loop (StyleGAN2-ADA layout)."""
