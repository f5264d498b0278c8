"""cli: the click pieces the command-line scripts share; only scripts import this package.

common (flag-named errors, option types, run directories, --threads, loading G_ema), compat (the released flag
spellings and aliases), options (train.py's click options from its option dataclasses), self_launch (--gpus=N
without torchrun).
"""
