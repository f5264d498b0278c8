"""gan_tools: the libraries behind the companion tools of a trained GAN.

sampling (generate.py's seed -> z -> image recipe), projection (projector.py), style_mixing (style_mixing.py) and
plot_stats (`python -m gan_tools.plot_stats RUN_DIR`: a run's training curves as one PNG).
"""
