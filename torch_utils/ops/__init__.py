"""Low-level ops used by StyleGAN-family networks, each with a pure-PyTorch reference path."""
