"""unetlib.data.isbi2012: loading the shared copy, downloading, verifying, resuming, failing clearly.

No test reaches the internet. Downloads come from a small HTTP server on 127.0.0.1 (port 0)
that serves the bytes of the shared copy under the upstream layout (image/N.png, label/N.png),
records every request and can corrupt, cut short or ignore Range requests on purpose.
"""
import hashlib
import importlib
import os
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import unetlib
from unetlib.data import LabeledImage, isbi2012, isbi2012_split

# `unetlib.data.isbi2012` is the function (exported by the package); the module behind it:
isbi_module = importlib.import_module("unetlib.data.isbi2012")
DatasetUnavailable = isbi_module.DatasetUnavailable
ChecksumMismatch = isbi_module.ChecksumMismatch

_DATA_ROOT = Path(os.environ.get("UNETLIB_DATA_DIR") or Path(unetlib.__file__).resolve().parents[2] / "shared" / "data")
SHARED = _DATA_ROOT / "isbi2012"
NAMES = list(isbi_module.SHA256)

needs_shared = pytest.mark.skipif(
    not (SHARED / "labels" / "29.png").is_file(),
    reason=f"the shared ISBI 2012 copy is not at {SHARED} (set UNETLIB_DATA_DIR to the folder holding isbi2012/)",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test may see the user's settings or write into the real ~/.cache."""
    monkeypatch.delenv("UNETLIB_DATA_DIR", raising=False)
    monkeypatch.delenv("UNETLIB_ISBI2012_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    with socket.socket() as s:  # bind, learn the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/train"


class Mirror:
    """A local HTTP mirror of the shared copy: ``url`` is the base URL, ``requests`` the log."""

    def __init__(self, honour_range: bool = True):
        self.files = {f"/train/{name.split('/')[0][:-1]}/{name.split('/')[1]}": (SHARED / name).read_bytes()
                      for name in NAMES}
        self.honour_range = honour_range
        self.truncate_once: set[str] = set()  # paths to cut short (once each)
        self.requests: list[tuple[str, str]] = []  # (path, Range header or "")
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append((self.path, self.headers.get("Range") or ""))
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, wanted = 0, self.headers.get("Range")
                if wanted and mirror.honour_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in mirror.truncate_once:
                    mirror.truncate_once.discard(self.path)
                    self.wfile.write(body[start:start + 1000])  # then the connection drops
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/train"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def hits(self, name: str) -> list[str]:
        """Range headers of the requests for local file ``name`` (e.g. 'labels/7.png')."""
        folder, file = name.split("/")
        return [r for p, r in self.requests if p == f"/train/{folder[:-1]}/{file}"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.close()


def _copy_except(dest: Path, skip: set) -> None:
    """Copy the shared files except ``skip`` into ``dest`` (a writable dataset folder)."""
    for name in NAMES:
        if name not in skip:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHARED / name, dest / name)


def _assert_no_bad_final_files(folder: Path) -> None:
    """Every file under its final name is a verified one: a failure never leaves wrong data."""
    for name in NAMES:
        if (folder / name).exists():
            assert _sha(folder / name) == isbi_module.SHA256[name], name


# ---------------------------------------------------------------------------------------------
# The module's data
# ---------------------------------------------------------------------------------------------
@needs_shared
def test_checksums_in_the_library_match_the_shared_sums_file():
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line)
    assert isbi_module.SHA256 == sums
    assert len(sums) == 60


def test_errors_are_oserrors_so_the_cli_reports_them_as_one_line():
    assert issubclass(DatasetUnavailable, OSError)
    assert issubclass(ChecksumMismatch, DatasetUnavailable)


# ---------------------------------------------------------------------------------------------
# Loading the shared copy
# ---------------------------------------------------------------------------------------------
def _check_slices(items):
    assert len(items) == 30 and all(isinstance(x, LabeledImage) for x in items)
    assert [x.meta["slice"] for x in items] == list(range(30))
    fractions = []
    for x in items:
        assert x.image.shape == (1, 512, 512) and x.image.dtype == np.float32
        assert 0.0 <= x.image.min() and x.image.max() <= 1.0
        assert x.instances.shape == (512, 512) and x.instances.dtype == np.int32
        assert x.instances.min() == 0 and x.instances.max() > 1  # many cells per slice
        fractions.append(np.mean(x.instances > 0))
    assert np.mean(fractions) == pytest.approx(0.78, abs=0.01)  # cells are the majority class


@needs_shared
def test_loads_the_shared_copy_via_root(monkeypatch):
    monkeypatch.setenv("UNETLIB_ISBI2012_URL", _closed_port_url())  # a download attempt would fail
    items = isbi2012(root=SHARED)  # download=True, but every file is there and verified
    _check_slices(items)
    # label 255 = cell -> foreground; instances = its 4-connected components
    raw = np.array(Image.open(SHARED / "labels" / "0.png"))
    assert set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(items[0].instances > 0, raw == 255)
    expected, count = ndimage.label(raw == 255, structure=ndimage.generate_binary_structure(2, 1))
    assert items[0].instances.max() == count
    np.testing.assert_array_equal(items[0].instances, expected)


@needs_shared
def test_loads_the_shared_copy_via_unetlib_data_dir(monkeypatch):
    monkeypatch.setenv("UNETLIB_DATA_DIR", str(SHARED.parent))
    items = isbi2012(download=False)
    _check_slices(items)
    assert Path(items[29].meta["label_path"]) == SHARED / "labels" / "29.png"


def test_folder_resolution_order(monkeypatch, tmp_path):
    find = isbi_module.isbi2012_folder
    assert find() == tmp_path / "xdg-cache" / "unetlib" / "isbi2012"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert find() == Path.home() / ".cache" / "unetlib" / "isbi2012"
    monkeypatch.setenv("UNETLIB_DATA_DIR", str(tmp_path / "data"))
    assert find() == tmp_path / "data" / "isbi2012"
    assert find(tmp_path / "mine") == tmp_path / "mine"


def test_download_false_with_missing_files_says_where_and_how(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        isbi2012(root=tmp_path / "empty", download=False)
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "images/N.png and labels/N.png for N = 0..29" in message
    assert "download=True" in message and "UNETLIB_DATA_DIR" in message
    assert not (tmp_path / "empty").exists()  # only checking: nothing is created


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
@needs_shared
def test_downloads_every_file_from_a_mirror_and_verifies_it(tmp_path, mirror):
    root = tmp_path / "isbi"
    items = isbi2012(root=root, base_url=mirror.url)
    assert len(items) == 30
    assert len(mirror.requests) == 60 and all(r == "" for _, r in mirror.requests)
    for name in NAMES:
        assert _sha(root / name) == isbi_module.SHA256[name]
    assert not list(root.rglob("*.part"))
    isbi_module.download_isbi2012(root, base_url=mirror.url)  # all there: no request at all
    assert len(mirror.requests) == 60


@needs_shared
def test_downloads_only_what_is_missing_from_the_env_url(tmp_path, mirror, monkeypatch):
    root = tmp_path / "isbi"
    _copy_except(root, {"images/4.png", "labels/17.png"})
    monkeypatch.setenv("UNETLIB_ISBI2012_URL", mirror.url)
    assert isbi_module.download_isbi2012(root) == root
    assert sorted(p for p, _ in mirror.requests) == ["/train/image/4.png", "/train/label/17.png"]
    _assert_no_bad_final_files(root)


@needs_shared
def test_corrupt_download_is_refused_after_one_retry(tmp_path, mirror):
    root = tmp_path / "isbi"
    _copy_except(root, {"labels/7.png"})
    path = "/train/label/7.png"
    mirror.files[path] = mirror.files[path][:-10] + b"0123456789"  # same size, wrong bytes
    with pytest.raises(ChecksumMismatch) as info:
        isbi2012(root=root, base_url=mirror.url)
    assert info.value.name == "labels/7.png"
    assert "labels/7.png" in str(info.value) and isbi_module.SHA256["labels/7.png"] in str(info.value)
    assert len(mirror.hits("labels/7.png")) == 2  # the download and one re-download
    assert not (root / "labels" / "7.png").exists()  # never under its final name
    assert not list(root.rglob("*.part"))  # and no bad bytes kept to resume from
    _assert_no_bad_final_files(root)


@needs_shared
def test_corrupt_local_file(tmp_path, mirror):
    root = tmp_path / "isbi"
    _copy_except(root, set())
    (root / "images" / "12.png").write_bytes(b"not a png")
    with pytest.raises(ChecksumMismatch, match=r"images/12\.png") as info:
        isbi2012(root=root, download=False)
    assert info.value.name == "images/12.png"
    assert mirror.requests == []
    isbi_module.download_isbi2012(root, base_url=mirror.url)  # with download: replaced once
    assert len(mirror.requests) == 1
    _assert_no_bad_final_files(root)


@needs_shared
@pytest.mark.parametrize("honour_range", [True, False])
def test_resumes_a_partial_download(tmp_path, honour_range):
    mirror = Mirror(honour_range=honour_range)
    try:
        root = tmp_path / "isbi"
        _copy_except(root, {"images/0.png"})
        first = (SHARED / "images" / "0.png").read_bytes()[:50_000]
        (root / "images" / "0.png.part").write_bytes(first)
        isbi_module.download_isbi2012(root, base_url=mirror.url)
        assert mirror.hits("images/0.png") == ["bytes=50000-"]  # asked for the rest only
        # Resumed (206) or, when the server ignores Range (200), restarted: either way intact.
        assert _sha(root / "images" / "0.png") == isbi_module.SHA256["images/0.png"]
        assert not (root / "images" / "0.png.part").exists()
    finally:
        mirror.close()


@needs_shared
def test_part_longer_than_the_file_starts_over(tmp_path, mirror):
    root = tmp_path / "isbi"
    _copy_except(root, {"labels/2.png"})
    (root / "labels" / "2.png.part").write_bytes(b"x" * 400_000)  # more than the file: 416
    isbi_module.download_isbi2012(root, base_url=mirror.url)
    assert mirror.hits("labels/2.png") == ["bytes=400000-", ""]
    _assert_no_bad_final_files(root)
    assert (root / "labels" / "2.png").exists()


@needs_shared
def test_dropped_connection_keeps_the_part_and_the_next_call_resumes(tmp_path, mirror):
    root = tmp_path / "isbi"
    _copy_except(root, {"labels/29.png"})
    mirror.truncate_once.add("/train/label/29.png")
    with pytest.raises(DatasetUnavailable, match="IncompleteRead"):
        isbi2012(root=root, base_url=mirror.url)
    assert not (root / "labels" / "29.png").exists()
    assert (root / "labels" / "29.png.part").stat().st_size == 1000
    with pytest.raises(DatasetUnavailable):  # no partial dataset passes as data
        isbi2012(root=root, download=False)
    isbi_module.download_isbi2012(root, base_url=mirror.url)
    assert mirror.hits("labels/29.png") == ["", "bytes=1000-"]
    _assert_no_bad_final_files(root)
    assert (root / "labels" / "29.png").exists()


@needs_shared
def test_server_error_on_one_file_leaves_only_verified_files(tmp_path, mirror):
    root = tmp_path / "isbi"
    del mirror.files["/train/label/29.png"]  # 404 for the very last file
    with pytest.raises(DatasetUnavailable, match="HTTP 404 Not Found") as info:
        isbi2012(root=root, base_url=mirror.url)
    assert info.value.missing == ["labels/29.png"]
    assert info.value.url.endswith("/label/29.png")
    assert not (root / "labels" / "29.png").exists()
    _assert_no_bad_final_files(root)  # the 59 files that did arrive are verified, and kept


def test_offline_gives_one_clear_error(tmp_path):
    root = tmp_path / "isbi"
    url = _closed_port_url()
    with pytest.raises(DatasetUnavailable) as info:
        isbi2012(root=root, base_url=url, timeout=5)
    error, message = info.value, str(info.value)
    assert isinstance(error, OSError)
    assert f"{url}/image/0.png" in message  # the URL that failed
    assert str(root) in message  # where to put the files
    assert "images/N.png and labels/N.png for N = 0..29" in message  # which files
    assert "UNETLIB_ISBI2012_URL" in message
    assert error.folder == root and len(error.missing) == 60
    assert not root.exists()  # nothing written: no partial dataset, not even empty folders


# ---------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------
def _fake_stack():
    return [LabeledImage(image=np.zeros((1, 4, 4)), instances=np.zeros((4, 4)), name=f"s{i}", meta={"slice": i})
            for i in range(30)]


def test_split_is_fixed_and_contiguous():
    assert isbi_module.ISBI2012_TRAIN_SLICES == tuple(range(25))
    assert isbi_module.ISBI2012_TEST_SLICES == (25, 26, 27, 28, 29)
    stack = _fake_stack()
    train, val, test = isbi2012_split(stack[::-1])  # order of the input does not matter
    assert [x.meta["slice"] for x in train] == list(range(20))
    assert [x.meta["slice"] for x in val] == [20, 21, 22, 23, 24]
    assert [x.meta["slice"] for x in test] == [25, 26, 27, 28, 29]
    train, val, test = isbi2012_split(stack, val_slices=0)
    assert len(train) == 25 and val == [] and len(test) == 5


def test_split_refuses_anything_but_the_whole_stack():
    with pytest.raises(ValueError, match="30 slices"):
        isbi2012_split(_fake_stack()[:25])
    with pytest.raises(ValueError, match="val_slices"):
        isbi2012_split(_fake_stack(), val_slices=25)
