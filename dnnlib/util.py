"""Miscellaneous helpers used by training code and by NVIDIA network pickles (`dnnlib.util`)."""

from typing import Any


class EasyDict(dict):
    """A dict whose items can also be read and written as attributes (`d.key` == `d['key']`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]
