"""Tests for dnnlib.util: names by string, cache dir, format_time, Logger and the cached open_url (loopback only)."""

import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from free_port import free_port
from dnnlib import util


@pytest.fixture(autouse=True)
def _default_cache_dir(monkeypatch):
    """Every test starts with no set_cache_dir() value; monkeypatch restores the module state afterwards."""
    monkeypatch.setattr(util, "_cache_dir", None)


# ----------------------------------------------------------------------------------------------------------------------
# EasyDict, format_time, cache dir.


def test_easydict_attribute_access():
    d = util.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1
    del d.a
    assert d == {"b": 2}
    with pytest.raises(AttributeError, match="^a$"):
        _ = d.a


@pytest.mark.parametrize(
    "seconds, expected",
    [(0, "0s"), (12, "12s"), (59.4, "59s"), (59.6, "1m 00s"), (185, "3m 05s"), (3599, "59m 59s"),
     (7263, "2h 01m 03s"), (86399, "23h 59m 59s"), (93780, "1d 02h 03m"), (np.float64(12.0), "12s")],
)
def test_format_time(seconds, expected):
    assert util.format_time(seconds) == expected


def test_format_time_rejects_bad_input():
    with pytest.raises(ValueError, match=r"seconds must be finite and >= 0, got -1"):
        util.format_time(-1)
    with pytest.raises(ValueError, match=r"got nan"):
        util.format_time(float("nan"))
    with pytest.raises(TypeError, match="seconds must be a number, got str"):
        util.format_time("12")


def test_cache_dir_priority(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    assert util.make_cache_dir_path("a", "b") == os.path.join(str(tmp_path / "home"), ".cache", "dnnlib", "a", "b")
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "env"))
    assert util.make_cache_dir_path("x") == os.path.join(str(tmp_path / "env"), "x")
    util.set_cache_dir(tmp_path / "explicit")
    assert util.make_cache_dir_path("x") == os.path.join(str(tmp_path / "explicit"), "x")
    util.set_cache_dir(None)
    assert util.make_cache_dir_path() == str(tmp_path / "env")
    assert not (tmp_path / "env").exists()  # Computing a path creates nothing.


def test_cache_dir_without_home(monkeypatch):
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    monkeypatch.setattr(util.os.path, "expanduser", lambda path: path)  # What expanduser does with no home at all.
    assert util.make_cache_dir_path("d") == os.path.join(util.tempfile.gettempdir(), "dnnlib-cache", "d")


def test_set_cache_dir_rejects_non_path():
    with pytest.raises(TypeError, match="path must be a str, os.PathLike or None, got int"):
        util.set_cache_dir(3)


# ----------------------------------------------------------------------------------------------------------------------
# Objects by name.


def test_get_obj_by_name():
    assert util.get_obj_by_name("torch.nn.Linear") is torch.nn.Linear
    assert util.get_obj_by_name("torch.nn.functional.relu") is torch.nn.functional.relu
    assert util.get_obj_by_name("os.path") is os.path
    assert util.get_obj_by_name("json").__name__ == "json"
    module, local_name = util.get_module_from_obj_name("torch.nn.Linear")
    assert (module.__name__, local_name) == ("torch.nn", "Linear")


def test_construct_class_by_name_with_torch_class():
    layer = util.construct_class_by_name(3, out_features=2, bias=False, class_name="torch.nn.Linear")
    assert isinstance(layer, torch.nn.Linear)
    assert layer.weight.shape == (2, 3) and layer.bias is None


def test_call_func_by_name():
    assert util.call_func_by_name(2, 10, func_name="math.pow") == 1024.0
    out = util.call_func_by_name(func_name="numpy.full", shape=(2, 3), fill_value=7)
    np.testing.assert_array_equal(out, np.full((2, 3), 7))


def test_by_name_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^class_name must be given, e\.g\. class_name='torch\.nn\.Linear'$"):
        util.construct_class_by_name(3, 2)
    with pytest.raises(ValueError, match=r"class_name='torch\.nn\.NoSuchLayer' could not be resolved: .*"
                                         r"module 'torch\.nn' has no attribute path 'NoSuchLayer'"):
        util.construct_class_by_name(class_name="torch.nn.NoSuchLayer")
    with pytest.raises(ValueError, match=r"func_name='nosuchpkg_xyz\.f' could not be resolved: .*no prefix"):
        util.call_func_by_name(func_name="nosuchpkg_xyz.f")
    with pytest.raises(TypeError, match=r"func_name='math\.pi' names a float, which is not callable"):
        util.call_func_by_name(func_name="math.pi")
    with pytest.raises(ValueError, match=r"class_name must be a dotted name such as 'torch\.nn\.Linear', got 'a b'"):
        util.construct_class_by_name(class_name="a b")
    with pytest.raises(TypeError, match=r"func_name must be a dotted name .*, got int"):
        util.call_func_by_name(func_name=3)


def test_import_error_inside_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_mod_for_test.py").write_text("import missing_dependency_xyz\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="missing_dependency_xyz"):
        util.get_obj_by_name("broken_mod_for_test.X")


# ----------------------------------------------------------------------------------------------------------------------
# Logger.


def test_logger_tees_stdout_and_stderr_to_file(tmp_path, capsys):
    log_path = tmp_path / "log.txt"
    original_stdout, original_stderr = sys.stdout, sys.stderr
    with util.Logger(file_name=str(log_path)) as logger:
        assert sys.stdout is logger and sys.stderr is not original_stderr
        print("hello")
        print("oops", file=sys.stderr)
        logger.write(b"bytes\n")
    assert sys.stdout is original_stdout and sys.stderr is original_stderr
    assert log_path.read_text() == "hello\noops\nbytes\n"
    captured = capsys.readouterr()
    assert captured.out == "hello\nbytes\n" and captured.err == "oops\n"

    with util.Logger(file_name=str(log_path), file_mode="a"):
        print("again")
    assert log_path.read_text() == "hello\noops\nbytes\nagain\n"


def test_logger_close_twice_and_bad_mode(tmp_path):
    logger = util.Logger()
    logger.close()
    logger.close()
    assert not isinstance(sys.stdout, util.Logger)
    with pytest.raises(ValueError, match=r"file_mode must be a text write/append mode such as 'w' or 'a', got 'r'"):
        util.Logger(file_name=str(tmp_path / "x.txt"), file_mode="r")


# ----------------------------------------------------------------------------------------------------------------------
# URLs and open_url.


def test_write_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    util.write_atomically("relative.bin", b"abc")  # A bare file name: the directory is the current one.
    util.write_atomically(tmp_path / "new" / "dir" / "x.bin", bytearray(b"xyz"))
    assert (tmp_path / "relative.bin").read_bytes() == b"abc"
    assert (tmp_path / "new" / "dir" / "x.bin").read_bytes() == b"xyz"
    assert sorted(os.listdir(tmp_path)) == ["new", "relative.bin"]

    def failing_replace(src, dst):
        sources.append(os.path.basename(src))
        raise OSError("disk full")

    sources = []

    monkeypatch.setattr(util.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        util.write_atomically(tmp_path / "new" / "dir" / "y.bin", b"data")
    assert os.listdir(tmp_path / "new" / "dir") == ["x.bin"]  # Neither the target nor a temp file is left.
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())  # The temp file was named after target and writer:
    assert re.fullmatch(rf"\.y\.bin\.{re.escape(host)}-{os.getpid()}\.[A-Za-z0-9_]+\.part", sources[0]), sources
    with pytest.raises(TypeError, match="write_atomically: data must be bytes, got str"):
        util.write_atomically(tmp_path / "z.bin", "text")


def test_remove_stale_temp_files_only_of_dead_writers_on_this_host(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # Its pid now belongs to no process (reaped).
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    names = {"stale": f".network-snapshot-000004.pkl.{host}-{dead.pid}.k3j_x9a1.part",
             "stale2": f".fakes000000.012.png.{host}-{dead.pid}.abc12345.part",
             "live": f".network-snapshot-000008.pkl.{host}-{os.getpid()}.q1w2e3r4.part",
             "other_host": f".network-snapshot-000004.pkl.elsewhere-{dead.pid}.k3j_x9a1.part",
             "unrelated": "notes.part", "hidden": ".network-snapshot-000004.pkl", "legacy": "tmp_abc.part"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert util.remove_stale_temp_files(tmp_path) == sorted([names["stale"], names["stale2"]])
    assert sorted(os.listdir(tmp_path)) == sorted(name for key, name in names.items() if not key.startswith("stale"))
    assert util.remove_stale_temp_files(tmp_path / "missing") == []


def test_is_url():
    assert util.is_url("https://example.com/a.pkl")
    assert util.is_url("http://127.0.0.1:8000/x")
    assert not util.is_url("file:///tmp/a.pkl")
    assert util.is_url("file:///tmp/a.pkl", allow_file_urls=True)
    assert not util.is_url("/tmp/a.pkl") and not util.is_url("http://") and not util.is_url(3)


def test_open_url_local_path_and_file_url(tmp_path):
    path = tmp_path / "dir with space" / "net.pkl"
    path.parent.mkdir()
    path.write_bytes(b"\x00local\xff")
    with util.open_url(str(path)) as f:
        assert f.read() == b"\x00local\xff"
    with util.open_url(path.as_uri()) as f:  # as_uri percent-encodes the space.
        assert f.read() == b"\x00local\xff"
    assert util.open_url(path, return_filename=True) == str(path)
    assert util.open_url(path.as_uri(), return_filename=True) == str(path)


def test_open_url_missing_local_path(tmp_path):
    missing = str(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError, match=f"open_url: '{missing}' is not an existing file"):
        util.open_url(missing)


def test_open_url_argument_errors():
    with pytest.raises(TypeError, match="url must be a str or os.PathLike, got int"):
        util.open_url(3)
    with pytest.raises(ValueError, match="num_attempts must be an int >= 1, got 0"):
        util.open_url("x", num_attempts=0)
    with pytest.raises(ValueError, match="return_filename=True needs cache=True"):
        util.open_url("http://127.0.0.1:1/a.pkl", return_filename=True, cache=False)


@pytest.fixture
def http_server(monkeypatch):
    """A loopback HTTP server in a background thread; yields (base_url, files dict, list of requested paths, stop)."""
    files, requested = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):  # Keep the test output clean.
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(util, "_DOWNLOAD_TIMEOUT_SEC", 10)
    monkeypatch.setattr(util, "_RETRY_DELAY_SEC", 0.0)
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            stopped.append(True)

    yield f"http://127.0.0.1:{server.server_address[1]}", files, requested, stop
    stop()


def test_open_url_http_download_cache_and_offline(http_server, tmp_path):
    base_url, files, requested, stop = http_server
    files["/models/net%20v1.pkl"] = b"payload-bytes"
    url = base_url + "/models/net%20v1.pkl"
    cache_dir = str(tmp_path / "cache")

    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == b"payload-bytes"
    md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    assert os.listdir(cache_dir) == [f"{md5}_net_v1.pkl"]  # Hash of the URL + safe base name; no temp file left.
    assert requested == ["/models/net%20v1.pkl"]

    cached_path = util.open_url(url, cache_dir=cache_dir, return_filename=True, verbose=False)
    assert cached_path == os.path.join(cache_dir, f"{md5}_net_v1.pkl")
    assert len(requested) == 1  # Served from the cache.

    stop()
    with util.open_url(url, cache_dir=cache_dir, num_attempts=1, verbose=False) as f:  # Offline now.
        assert f.read() == b"payload-bytes"


def test_open_url_http_without_cache_and_default_cache_dir(http_server, tmp_path, capsys):
    base_url, files, requested, _ = http_server
    files["/a.bin"] = b"abc"
    util.set_cache_dir(tmp_path)
    f = util.open_url(base_url + "/a.bin", cache=False)
    assert isinstance(f, io.BytesIO) and f.read() == b"abc"
    assert not (tmp_path / "downloads").exists()
    assert capsys.readouterr().out == f"Downloading {base_url}/a.bin ... done\n"

    path = util.open_url(base_url + "/a.bin", return_filename=True, verbose=False)
    assert os.path.dirname(path) == str(tmp_path / "downloads")
    with open(path, "rb") as f:
        assert f.read() == b"abc"


def test_open_url_fails_at_once_on_a_client_error_naming_url(http_server, tmp_path):
    base_url, _, requested, _ = http_server
    url = base_url + "/missing.pkl"
    with pytest.raises(OSError, match=rf"could not download '{url}' after 1 attempt\(s\): 404 .*"
                                      r"pass its local path instead of the URL"):
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=3, verbose=False)
    assert requested == ["/missing.pkl"]  # A 404 does not go away on retry.
    assert os.listdir(tmp_path) == []


def test_open_url_retries_server_errors(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_RETRY_DELAY_SEC", 0)
    base_url, _, requested, _ = http_server
    url = base_url + "/missing.pkl"
    monkeypatch.setattr(util, "_worth_retrying", lambda err: True)  # As for a 503: every attempt is made.
    with pytest.raises(OSError, match=rf"could not download '{url}' after 3 attempt\(s\)"):
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=3, verbose=False)
    assert requested == ["/missing.pkl"] * 3


def test_worth_retrying_classifies_errors():
    import requests
    response = requests.Response()
    for status, expected in ((404, False), (403, False), (429, True), (408, True), (500, True), (503, True)):
        response.status_code = status
        assert util._worth_retrying(requests.HTTPError(response=response)) is expected, status
    assert util._worth_retrying(requests.ConnectionError("Failed to resolve 'x.invalid'")) is False
    assert util._worth_retrying(requests.ConnectTimeout()) is True
    assert util._worth_retrying(requests.ReadTimeout()) is True
    assert util._worth_retrying(requests.ConnectionError("('Connection aborted.', RemoteDisconnected())")) is True


def test_open_url_unreachable_server_fails_after_one_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_DOWNLOAD_TIMEOUT_SEC", 10)
    slept = []
    monkeypatch.setattr(util.time, "sleep", slept.append)
    port = free_port()  # Nothing listens there: offline, as far as open_url can tell.
    url = f"http://127.0.0.1:{port}/net.pkl"
    with pytest.raises(OSError, match=rf"^open_url: could not download '{url}' after 1 attempt\(s\): .*"
                                      r"Download the file elsewhere .* and pass its local path instead of the URL\.$"):
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=10, verbose=False)
    assert slept == []


def test_write_atomically_gives_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert util.get_umask() == 0o022
        util.write_atomically(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
