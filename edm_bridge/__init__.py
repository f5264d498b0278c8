"""edm_bridge: pretrained EDM / ADM diffusion models as frozen noise predictors."""
