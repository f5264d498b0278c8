"""Import a module from source text written to a temporary file (tests of persistence need real source files).

This directory is on pytest's `pythonpath` (pyproject.toml), so tests `from temp_modules import import_source`.
"""

import importlib
import sys
import uuid


def import_source(directory, source, prefix):
    """Write `source` to a uniquely named module file in `directory`, import it, and take `directory` off sys.path."""
    name = f'{prefix}_{uuid.uuid4().hex}'
    (directory / f'{name}.py').write_text(source)
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
