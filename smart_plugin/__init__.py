"""smart_plugin: the SMaRt score-matching regularizer (arXiv 2311.18208) and related loss plugins."""
