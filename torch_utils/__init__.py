"""torch_utils: persistence, misc helpers, training statistics and custom ops.

The module and function names here are a compatibility contract with NVIDIA network pickles
(StyleGAN2-ADA, StyleGAN3, EDM), whose stored source code imports them by name.
"""
