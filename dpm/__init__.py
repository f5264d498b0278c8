"""Training diffusion models for datasets without a pretrained score source (train_dpm.py): EDM / VP / VE / NCSNv2
losses, Stable Target Field targets, sigma distributions (the SMaRt band), EDM's augmentation pipe, the training
loop and its snapshots. The trained networks and the frozen-denoiser side live in edm_bridge/."""
