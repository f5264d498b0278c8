"""dnnlib: small utilities whose names are a compatibility contract with NVIDIA network pickles.

Pickles written by StyleGAN2-ADA, StyleGAN3 and EDM refer to `dnnlib.util.EasyDict` and call the
helpers below by name; see docs/spec/nvidia-pickles.md section 2.
"""

from .util import EasyDict, make_cache_dir_path
