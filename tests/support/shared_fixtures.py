"""Locate the reference fixtures in shared/fixtures (produced by the released reference code; data only).

The shared folder sits beside the repository checkout (../shared from the repository root). Tests that compare with
these references skip, with the path they looked at, when the folder is absent (e.g. a bare clone).
"""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_VAR = 'SMART_GAN_SHARED'  # Overrides the location of the shared folder.


def fixture_dir(name: str) -> str:
    """Absolute path of shared/fixtures/<name>; pytest.skip naming the places looked at if it does not exist."""
    roots = [os.environ[ENV_VAR]] if os.environ.get(ENV_VAR) else []
    # A git worktree may sit one level deeper than the main checkout (e.g. /work/wt/<name> beside /work/shared).
    roots += [os.path.join(REPO_ROOT, '..', 'shared'), os.path.join(REPO_ROOT, '..', '..', 'shared')]
    candidates = [os.path.normpath(os.path.join(root, 'fixtures', name)) for root in roots]
    for path in candidates:
        if os.path.isdir(path):
            return path
    pytest.skip(f'reference fixture {name!r} not found (looked in {candidates}; set ${ENV_VAR} to the shared folder)')
