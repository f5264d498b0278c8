"""Miscellaneous helpers used by training code and by NVIDIA network pickles (`dnnlib.util`).

The names, signatures and keyword names here are a compatibility contract (docs/spec/nvidia-pickles.md section 2):
pickles refer to `dnnlib.util.EasyDict`, and NVIDIA-style kwargs dicts are turned into objects with
`construct_class_by_name(class_name=...)` / `call_func_by_name(func_name=...)`. `open_url` is the one cached
download path of the project; it also accepts local paths so library functions can take either.
"""

import hashlib
import importlib
import io
import os
import re
import socket
import sys
import tempfile
import time
import types
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Optional, Union

_DOWNLOAD_TIMEOUT_SEC = 60  # Per request; a stalled server should fail one attempt, not hang the run.
_MAX_SAFE_NAME_LEN = 64  # Keeps cache file names well below file-system limits.
_RETRY_DELAY_SEC = 1.0  # Transient server errors often clear within a second; keeps the total wait bounded.


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


# ----------------------------------------------------------------------------------------------------------------------
# Logging.


class _StreamTee:
    """Stand-in for one standard stream: everything written goes to the Logger's file and to the original stream."""

    def __init__(self, logger: "Logger", stream: Any):
        self._logger = logger
        self._stream = stream

    def write(self, text: Union[str, bytes]) -> None:
        self._logger._write(self._stream, text)

    def flush(self) -> None:
        self._logger._flush(self._stream)

    def isatty(self) -> bool:
        # Progress bars and colour codes would end up in the log file verbatim, so claim not to be a terminal.
        return False

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


class Logger(_StreamTee):
    """Tee of stdout and stderr into an optional log file, installed as `sys.stdout` / `sys.stderr` until `close()`.

    Usable as a context manager. Writes to the Logger itself go to the log file and the original stdout.
    """

    def __init__(self, file_name: Optional[str] = None, file_mode: str = "w", should_flush: bool = True):
        if file_mode not in ("w", "a", "x", "wt", "at", "xt"):
            raise ValueError(f"file_mode must be a text write/append mode such as 'w' or 'a', got {file_mode!r}")
        self.file = open(file_name, file_mode, encoding="utf-8") if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        super().__init__(self, self.stdout)
        self._stderr_tee = _StreamTee(self, self.stderr)
        sys.stdout = self
        sys.stderr = self._stderr_tee

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def _write(self, stream: Any, text: Union[str, bytes]) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if len(text) == 0:  # Some libraries write empty strings as a flush; keep the file free of no-op calls.
            return
        if self.file is not None:
            self._to_file(self.file.write, text)
        stream.write(text)
        if self.should_flush:
            self._flush(stream)

    def _to_file(self, method: Any, *args: Any) -> None:
        """Call a write/flush of the log file; if it fails (disk full), stop logging to the file and say so once on
        the console instead of failing the print (the caller's own error must still reach the user)."""
        try:
            method(*args)
        except OSError as err:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:
                pass
            self.stderr.write(f"Log file {file.name} no longer written: {err.strerror or err}\n")

    def _flush(self, stream: Any) -> None:
        if self.file is not None:
            self._to_file(self.file.flush)
        stream.flush()

    def close(self) -> None:
        """Flush, restore the original streams (if still ours) and close the log file. Safe to call twice."""
        if self.file is not None:
            self._to_file(self.file.flush)
        self.stdout.flush()
        self.stderr.flush()
        # Only restore what we installed: a Logger created after us owns the streams now.
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self._stderr_tee:
            sys.stderr = self.stderr
        if self.file is not None:
            self._to_file(self.file.close)
            self.file = None


# ----------------------------------------------------------------------------------------------------------------------
# Cache directory and formatting.

_cache_dir: Optional[str] = None


def set_cache_dir(path: Optional[Union[str, os.PathLike]]) -> None:
    """Make `path` the root of `make_cache_dir_path` for this process; None restores the default lookup."""
    global _cache_dir
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"set_cache_dir: path must be a str, os.PathLike or None, got {type(path).__name__}")
    _cache_dir = None if path is None else os.fspath(path)


def make_cache_dir_path(*paths: str) -> str:
    """Return a path under the cache root: set_cache_dir() value, else $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib.

    Without a usable home directory the root is <tempdir>/dnnlib-cache. Nothing is created on disk.
    """
    if _cache_dir is not None:
        root = _cache_dir
    elif os.environ.get("DNNLIB_CACHE_DIR"):
        root = os.environ["DNNLIB_CACHE_DIR"]
    else:
        home = os.path.expanduser("~")
        # expanduser returns '~' unchanged when neither $HOME nor the password database knows a home.
        if home != "~":
            root = os.path.join(home, ".cache", "dnnlib")
        else:
            root = os.path.join(tempfile.gettempdir(), "dnnlib-cache")
    return os.path.join(root, *paths)


def format_time(seconds: Union[int, float]) -> str:
    """Format a duration for humans: '12s', '3m 05s', '2h 01m 03s', '1d 02h 03m' (rounded to whole seconds)."""
    if isinstance(seconds, (bool, str, bytes)) or not hasattr(seconds, "__float__"):
        raise TypeError(f"format_time: seconds must be a number, got {type(seconds).__name__}")
    value = float(seconds)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"format_time: seconds must be finite and >= 0, got {seconds!r}")
    s = int(round(value))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


# ----------------------------------------------------------------------------------------------------------------------
# Objects by dotted name (NVIDIA kwargs dicts such as {'class_name': 'training.networks.Generator', ...}).


def _check_dotted_name(arg_name: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{arg_name} must be a dotted name such as 'torch.nn.Linear', got {type(name).__name__}")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        raise ValueError(f"{arg_name} must be a dotted name such as 'torch.nn.Linear', got {name!r}")


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Follow the dotted attribute path `obj_name` inside `module` ('' returns the module itself)."""
    obj: Any = module
    for part in obj_name.split(".") if obj_name else []:
        obj = getattr(obj, part)
    return obj


def get_module_from_obj_name(obj_name: str) -> tuple[types.ModuleType, str]:
    """Split `obj_name` into (imported module, remaining attribute path), using the longest importable prefix."""
    _check_dotted_name("obj_name", obj_name)
    parts = obj_name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only "this prefix is not a module" means: try a shorter prefix. A missing import *inside* an existing
            # module is a real error and must surface as such.
            if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue
            raise
        local_name = ".".join(parts[i:])
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            raise ValueError(
                f"obj_name {obj_name!r} not found: module {module_name!r} has no attribute path {local_name!r}"
            ) from None
        return module, local_name
    raise ValueError(f"obj_name {obj_name!r} not found: no prefix of it is an importable module")


def get_obj_by_name(name: str) -> Any:
    """Return the Python object (module, class, function, ...) with the fully qualified dotted name `name`."""
    module, local_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, local_name)


def _call_by_name(arg_name: str, name: Any, args: tuple, kwargs: dict) -> Any:
    if name is None:
        raise ValueError(f"{arg_name} must be given, e.g. {arg_name}='torch.nn.Linear'")
    _check_dotted_name(arg_name, name)
    try:
        func = get_obj_by_name(name)
    except ValueError as err:
        raise ValueError(f"{arg_name}={name!r} could not be resolved: {err}") from None
    if not callable(func):
        raise TypeError(f"{arg_name}={name!r} names a {type(func).__name__}, which is not callable")
    return func(*args, **kwargs)


def call_func_by_name(*args: Any, func_name: Optional[str] = None, **kwargs: Any) -> Any:
    """Look up the function `func_name` by dotted name and return `func(*args, **kwargs)`."""
    return _call_by_name("func_name", func_name, args, kwargs)


def construct_class_by_name(*args: Any, class_name: Optional[str] = None, **kwargs: Any) -> Any:
    """Look up the class `class_name` by dotted name and return an instance `cls(*args, **kwargs)`."""
    return _call_by_name("class_name", class_name, args, kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# URLs and downloads.


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True if `obj` is an http(s) URL string with a host (or a file:// URL when `allow_file_urls`)."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    parsed = urllib.parse.urlparse(obj)
    if parsed.scheme == "file":
        return allow_file_urls
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _file_url_to_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    # 'file:///a/b' and 'file://localhost/a/b' name /a/b; 'file://C:/a' (seen on Windows) puts the drive in netloc.
    location = parsed.path if parsed.netloc in ("", "localhost") else parsed.netloc + parsed.path
    return urllib.request.url2pathname(location)


def _cache_file_name(url: str) -> tuple[str, str]:
    """Return (hash prefix, file name) of the cache entry for `url`: '<md5 of url>_<safe base name>'."""
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    base = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    safe_name = re.sub(r"[^0-9A-Za-z_.-]", "_", base)[-_MAX_SAFE_NAME_LEN:] or "download"
    return url_md5 + "_", url_md5 + "_" + safe_name


def _find_cached(cache_dir: str, prefix: str) -> Optional[str]:
    if not os.path.isdir(cache_dir):
        return None
    names = sorted(name for name in os.listdir(cache_dir) if name.startswith(prefix))
    return os.path.join(cache_dir, names[0]) if names else None


def _worth_retrying(err: BaseException) -> bool:
    """False for failures that another attempt cannot fix: no connection at all (offline, unknown host, refused)
    and client errors (4xx other than 408 / 429); True for timeouts, dropped connections mid-transfer and 5xx."""
    import requests
    if isinstance(err, requests.ConnectionError) and not isinstance(err, requests.ConnectTimeout):
        return 'Connection aborted' in str(err) or 'Connection broken' in str(err)
    response = getattr(err, 'response', None)
    status = getattr(response, 'status_code', None)
    return not (status is not None and 400 <= status < 500 and status not in (408, 429))


def _download(url: str, num_attempts: int, verbose: bool) -> bytes:
    """Fetch `url` with up to `num_attempts` tries; raise OSError with an offline hint if all fail."""
    import requests  # Imported here so that `import dnnlib` stays cheap for code that never downloads.

    last_error: Optional[BaseException] = None
    with requests.Session() as session:
        for attempt in range(num_attempts):
            if verbose:
                print(f"Downloading {url} ...", end="", flush=True)
            try:
                with session.get(url, timeout=_DOWNLOAD_TIMEOUT_SEC) as response:
                    response.raise_for_status()
                    data = response.content
                if len(data) == 0:
                    raise OSError("the server returned an empty body")
                if verbose:
                    print(" done")
                return data
            except (requests.RequestException, OSError) as err:
                last_error = err
                if verbose:
                    print(" failed")
                if not _worth_retrying(err):
                    break
                if attempt + 1 < num_attempts:
                    time.sleep(_RETRY_DELAY_SEC)
    raise OSError(
        f"open_url: could not download {url!r} after {attempt + 1} attempt(s): {last_error}. "
        f"Download the file elsewhere (e.g. with a browser or wget on a machine with internet access) "
        f"and pass its local path instead of the URL."
    ) from last_error


def get_umask() -> int:
    """Return the process umask (os.umask can only read it by setting it; it is restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writer_tag() -> str:
    """'<host>-<pid>' of this process (host without dots), the writer's part of a temp file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) + f"-{os.getpid()}"


# write_atomically's temp files: .<destination name>.<host>-<pid>.<random>.part
_TEMP_NAME = re.compile(r"^\.(?P<dest>.+)\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.part$")


def write_atomically(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write `data` to the file `path` (creating its directory) so that readers see either nothing or all of it.

    The temp file is `.<name>.<host>-<pid>.<random>.part` beside `path`, named after its destination and its
    writer, so that one left by a killed process can be recognised (remove_stale_temp_files).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_atomically: data must be bytes, got {type(data).__name__}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Temp file in the same directory, then rename: os.replace is atomic within one file system, so other ranks
    # or runs never read a partially written file.
    prefix = f".{os.path.basename(path)}.{_writer_tag()}."
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".part")
    try:
        os.chmod(tmp_path, 0o666 & ~get_umask())  # mkstemp makes 0600; give the result normal file permissions.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # Signal 0: only checks that the process exists.
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Exists, owned by another user.
    return True


def remove_stale_temp_files(directory: Union[str, os.PathLike]) -> list:
    """Delete the temp files of write_atomically in `directory` whose writer no longer runs (killed during a write);
    return their names, sorted. Files of live processes and of other hosts are kept; other files are never touched.
    """
    if not os.path.isdir(directory):
        return []
    host = _writer_tag().rsplit("-", 1)[0]
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _TEMP_NAME.match(name)
        if match is None or match.group("host") != host or _process_alive(int(match.group("pid"))):
            continue
        try:
            os.remove(os.path.join(directory, name))
            removed.append(name)
        except FileNotFoundError:  # Removed meanwhile by another cleaner.
            pass
    return removed


def remove_stale_temp_files_below(outdir: Union[str, os.PathLike]) -> dict:
    """remove_stale_temp_files in `outdir` and in every directory directly inside it (the run dirs of an --outdir);
    return {folder: removed names} for the folders that had any."""
    if not os.path.isdir(outdir):
        return {}
    folders = [os.fspath(outdir)] + [os.path.join(outdir, name) for name in sorted(os.listdir(outdir))]
    removed = {folder: remove_stale_temp_files(folder) for folder in folders if os.path.isdir(folder)}
    return {folder: names for folder, names in removed.items() if names}


def open_url(
    url: Union[str, os.PathLike],
    cache_dir: Optional[str] = None,
    num_attempts: int = 10,
    verbose: bool = True,
    return_filename: bool = False,
    cache: bool = True,
) -> Union[BinaryIO, str]:
    """Open a local path, file:// URL or http(s) URL for binary reading; return the file object (or its file name).

    http(s) downloads are cached in `cache_dir` (default make_cache_dir_path('downloads')); a cached URL is served
    without network access. `cache=False` downloads into memory and returns an io.BytesIO.
    """
    if not isinstance(url, (str, os.PathLike)):
        raise TypeError(f"open_url: url must be a str or os.PathLike, got {type(url).__name__}")
    if isinstance(num_attempts, bool) or not isinstance(num_attempts, int) or num_attempts < 1:
        raise ValueError(f"open_url: num_attempts must be an int >= 1, got {num_attempts!r}")
    url = os.fspath(url)

    if not is_url(url, allow_file_urls=True):
        return _open_local(url, url, return_filename)
    if urllib.parse.urlparse(url).scheme == "file":
        return _open_local(_file_url_to_path(url), url, return_filename)

    if return_filename and not cache:
        raise ValueError(f"open_url: return_filename=True needs cache=True for {url!r} (there is no file otherwise)")
    cache_dir = make_cache_dir_path("downloads") if cache_dir is None else os.fspath(cache_dir)
    prefix, file_name = _cache_file_name(url)
    if cache:
        cached_path = _find_cached(cache_dir, prefix)
        if cached_path is not None:
            return cached_path if return_filename else open(cached_path, "rb")

    data = _download(url, num_attempts, verbose)
    if not cache:
        return io.BytesIO(data)
    path = os.path.join(cache_dir, file_name)
    write_atomically(path, data)
    return path if return_filename else open(path, "rb")


def _open_local(path: str, url: str, return_filename: bool) -> Union[BinaryIO, str]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"open_url: {url!r} is not an existing file (nor an http(s) URL)")
    return path if return_filename else open(path, "rb")

