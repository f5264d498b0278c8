"""The closed-form Gaussian score source now lives in edm_bridge/gaussian.py (with the other denoisers); this name
stays for code and pickles that import it from here."""

from edm_bridge.gaussian import (  # noqa: F401
    CHUNK_ELEMENTS, VAR_FLOOR, GaussianDenoiser, degenerate_fit_warning, fit_gaussian_denoiser)
