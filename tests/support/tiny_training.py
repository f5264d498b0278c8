"""The tiny GAN training configuration that the training-loop tests share: 8x8 RGB, 16-channel networks, batch 4
in rounds of 2, on CPU (train_state.setup_training keywords)."""


def tiny_config(data_zip, **overrides) -> dict:
    config = dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data_zip, use_labels=False,
                                 xflip=False),
        G_kwargs=dict(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=128, channel_max=16)),
        D_kwargs=dict(channel_base=128, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2)),
        G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]), D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]),
        loss_kwargs=dict(r1_gamma=1.0), batch_size=4, batch_gpu=2, device='cpu', random_seed=3)
    config.update(overrides)
    return config
