"""The ISBI 2012 EM training slices, the paper's own data: find, download, verify, load.

``isbi2012()`` returns the 30 slices of the challenge's training stack (serial-section TEM of
the Drosophila first-instar larva ventral nerve cord, Cardona et al. 2010) as
:class:`~unetlib.data.LabeledImage` objects, ready for :class:`~unetlib.data.TileDataset`::

    from unetlib.data import isbi2012, isbi2012_split
    slices = isbi2012()                      # 30 x LabeledImage, image (1, 512, 512) float32
    train, val, test = isbi2012_split(slices)  # slices 0-19, 20-24, 25-29

Where the files are looked for (the first rule that applies)::

    root                          if you pass it
    $UNETLIB_DATA_DIR/isbi2012    if the environment variable is set (CI, shared lab copies)
    $XDG_CACHE_HOME/unetlib/isbi2012, else ~/.cache/unetlib/isbi2012

The folder holds ``images/N.png`` and ``labels/N.png`` for N = 0..29.  Missing files are
downloaded from :data:`ISBI2012_URL` (a mirror can replace it: ``base_url=...`` or the
environment variable ``UNETLIB_ISBI2012_URL``; it must serve the same relative paths,
``BASE/image/N.png`` and ``BASE/label/N.png``).

Why you can trust what comes back:

* every file is checked against a sha256 sum stored in this module (:data:`SHA256`), on every
  call, not only after a download;
* a download goes to ``NAME.part`` in the same folder and is renamed (``os.replace``, atomic)
  only after its checksum matched, so an interrupted or corrupted download never sits under
  the final name; an interrupted one is resumed next time (HTTP ``Range``);
* a problem raises one :class:`DatasetUnavailable` (an ``OSError``) that says what to do;
  a partial dataset is never returned.

Labels: 255 = cell interior (about 78 % of the pixels), 0 = membrane.  Cells become the
foreground class and their **4-connected** components the instances (see :func:`isbi2012`).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence, Union

from .io import LabeledImage, read_image, read_mask

__all__ = [
    "ISBI2012_URL",
    "ISBI2012_TRAIN_SLICES",
    "ISBI2012_TEST_SLICES",
    "SHA256",
    "DatasetUnavailable",
    "ChecksumMismatch",
    "isbi2012",
    "isbi2012_folder",
    "download_isbi2012",
    "isbi2012_split",
]

PathLike = Union[str, os.PathLike]

#: Upstream copy: the GitHub repository zhixuhao/unet, files unchanged since June 2018.
ISBI2012_URL = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/train"

N_SLICES = 30
#: Slices for training and validation: the first 25 of the stack.
ISBI2012_TRAIN_SLICES = tuple(range(0, 25))
#: Held-out test slices: the last five of the stack (see :func:`isbi2012_split`).
ISBI2012_TEST_SLICES = tuple(range(25, 30))

ENV_DATA_DIR = "UNETLIB_DATA_DIR"
ENV_URL = "UNETLIB_ISBI2012_URL"

#: sha256 of every file, by its name in the local folder.  This is data, kept in the library
#: so that a download is checked against what the course was written for, not against a
#: checksum file fetched from the same (possibly wrong) place.
SHA256 = {
    "images/0.png": "12c0ed6f42fc09f512abf6b354f217c950e4c8223b57a0315449b62a14556523",
    "images/1.png": "2cfc7ee635a6f85d5faf5c82a71d3a37bf5af4784b554964e3e07193e3ee2166",
    "images/2.png": "fe60d8d4f93102666a23a18d718b4b59fab8e616987d11c5072f4a87fac7301f",
    "images/3.png": "636d16cbb02f99dda4c9fb6db98dfba066142afa981ffdcfaf54453982e8250c",
    "images/4.png": "991fb3a8e4abc73da1d6159ca28fa4397f0a8351f30a8ba3669c86414d2ce239",
    "images/5.png": "7e9d9fb787664336d6f2cd68b23986f04527e7f8f494410983b4d70c6de1de3b",
    "images/6.png": "7c0a87933ffc72f4ff02f5996d9c3f69fe9a0b5277507415743ad8afb5e5d308",
    "images/7.png": "19f2c25716107d41008c83ba8a814ae47a090e00dea766dde38dce1f00899270",
    "images/8.png": "a8979e4abd1a10af9ca75e614d97875659adbd8ee3a68eba483bf556cfe3023d",
    "images/9.png": "730ebf435ab0f6e625d342552ad03736799fd660d0c6af744674c61a46aa082a",
    "images/10.png": "7c3717bcd48c4b7e5c878d7f0b809b8687a4e6fac471f3863de320a82ee72b8a",
    "images/11.png": "dd7857b25ca1417f87c282750e22c50947f75e81fa032d4e0c96b902c9dc9757",
    "images/12.png": "9f8eff9239bb764d51524a998387a7babcff9f62161804651b030b81aabd5ab8",
    "images/13.png": "377e5cdbcd7f0ac7336f482fc7ead7446887863f26769b3841fe98aadca77dad",
    "images/14.png": "f50d2d77acd2df564c5f0f40b1b24cd929f5944460aa4cd90c422cb5cef33a59",
    "images/15.png": "3e13fdea09accc14f46fb2f3ffa1e882cdd9c53b28a6842c4c10229692c7d1a4",
    "images/16.png": "ffc951c12450f94129582c16fd0d4b165c4a31469b0c42d966f07c183d3132e2",
    "images/17.png": "0f4f7e8e0619e4c7d517ac68d3789a3b6248253747717eac418bb7d32bef4de3",
    "images/18.png": "1bb1edd50595861743d14e1955dfa5d3c9395fb87563eca6dc81433bf9df49de",
    "images/19.png": "999b55633f8d7082add72082656e9532c5c3d97203b376eb317f09ba88a5a5b7",
    "images/20.png": "9153d14bfd15955fab576ea23281c4f23104b45dceed6e03e0b254607f50a1b2",
    "images/21.png": "9ad07cf4f67984f17a08aa63e6d92d395ce55f5132e6ff4fa6d95d6890ea7f97",
    "images/22.png": "6278609b4c42a7cb43212de0e2e2ceded758bafe0856fb56214ce658a61668e4",
    "images/23.png": "9ef4e9fbc838b9791af83a36918d729a0ea2e90ebc71c4a3c4554059f9379756",
    "images/24.png": "f0f917b9c3e9c96d16ea287aff9b05ecf4de88bc61d478e4aefcb64932fba70c",
    "images/25.png": "e0154737e76392e8bf94fb2c0dfa5ddad4b53aeec942a0a8cdd8ba63443e6072",
    "images/26.png": "d0ff11e09b0ee0c817334946e746a38ab621161d5f9c46af95c68b851f8d9a1a",
    "images/27.png": "eed8e8bee1db8fe7af39b5b43ecf14282c5c33eca0959726eea06f662027eacc",
    "images/28.png": "974df4b51e8905bdaabe61e80496cbf331f5c9aa9ddc2cb94113f58c2b7d2837",
    "images/29.png": "d9ae868509c610a69acbf3d69cde4f36a8e344cbbc444f93c917bf7b9f3e784f",
    "labels/0.png": "13b67edd7607a1f284c09170c96a27d38422b0ffaf88024ea5b689acb5e1b4b0",
    "labels/1.png": "cff60a00de2901e67165c91d7708d784e4c5bcc9d1c8c677922c905d63bbc3d1",
    "labels/2.png": "a578af998c017f56763b81941c4dc612dde5731809b2cea0e8ebc37aecb84dbb",
    "labels/3.png": "c8ae3b843fed02e09411a24c10850160922c331041b17c2674025f05a99b8834",
    "labels/4.png": "a2f19c01b5d982a97923a0d29e64127a05e3f496731480ac9d9d302b5427f7ff",
    "labels/5.png": "2dd5779118f6f4d87f88ec112f1cea20663b50acb8c748b0db1f23eda82b5118",
    "labels/6.png": "2b0984e9f31fb41d4c5f4a754a3e080036b7321a0cbd9591a62010d20a574ce7",
    "labels/7.png": "2ebc8c835999589bfd7d80d81f83d24e5c41138362b0faafef0f009e1ce82144",
    "labels/8.png": "db979010ca4fbdb38c8b32d455aed0da90d598153f2a0046b63d02a6efa32b9e",
    "labels/9.png": "8ee6c79adbb740595c4d61776e065e7164c00d52c7dd7562b5279041e7f3567b",
    "labels/10.png": "b0156cc8186b0ee521927ac95645b406a42d27564607a6fea3a59c34add78f7c",
    "labels/11.png": "e47b3aa0cfb3106476af1666e631d45bd16dbf2aff88260ee65d16e4134332db",
    "labels/12.png": "85a7a899c0b72b81633ad122887ba5161d650385d7775a5b3074eb00131b3620",
    "labels/13.png": "88549c22fd647312d6b37e17d33e90800d347d60ccb1156a8dde5e67394f9f3d",
    "labels/14.png": "bcd775017eb4fdbdfe7ad6cc6420b2f16aa9d0576894d08370edcf564b46680a",
    "labels/15.png": "59a854887b504ff00a5b4b93b2299bbc0bf0cbe54dea58d2b31969229b28b369",
    "labels/16.png": "b34eb88cdc3313a6f4190f5753465df7f69d8f3c243a5c25427b1b99ecfe2499",
    "labels/17.png": "4fa076cbeb744803d987dc46cf308dc3026408e7a5188838e30e25fe3ea67dbe",
    "labels/18.png": "bd009dda57f204804732f592ed1d41ba18961d83c492413fe71548efa4a288d9",
    "labels/19.png": "bf38407c55b6033c1677230228ecb100a11294aa74a7b92e5edfdc4abadcfef9",
    "labels/20.png": "7af7296f2e892866669d4e4f9c0d4178987e6ec6e7d0751ec238d1bbe2da9c55",
    "labels/21.png": "772c722acb2eac01769b53fa5037a3d62745e53102398bf9b2202df605cadda4",
    "labels/22.png": "b19f5533ec24077a2395a085fe53af75dd350ef03798c4ff40ba9ebecb2ee0ad",
    "labels/23.png": "2d8f1df5c9ee83e59eb2d709eb153b0570f12e726690f586154b01b0a88bb540",
    "labels/24.png": "6ab02d922b5c937ecfe2a479be87a5d3e5ef950dc48da09d31f37b47d899ca9c",
    "labels/25.png": "c5ea59aca7789dd507ac31c4a82bbd4c172f9e3544f8e040442c20d1dfa9e16d",
    "labels/26.png": "b056fae9f358111b6c9e2494bdba645f206be581959b8d3763e97d62a65dd961",
    "labels/27.png": "5be3823a57c82b632cead6eb09f438c6010a244dc0975f2a3e466f45d2c06840",
    "labels/28.png": "c0b0e2a2b7aad46919d1afc980f7d5e39101fb07948ce65d9cac802d8b47682e",
    "labels/29.png": "1e8839a97178914171defd6a97158f06fcac1fc3f0d45f2acdff9c49ab3fced9",
}

_EXPECTED = "images/N.png and labels/N.png for N = 0..29 (60 files)"
# What counts as "the network failed" (as opposed to the disk): urllib wraps DNS failures and
# refused connections in URLError (HTTPError is one too), a stalled socket raises TimeoutError,
# a connection dropped mid-file ConnectionError or http.client.IncompleteRead.
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)
_CHUNK = 64 * 1024


class DatasetUnavailable(OSError):
    """The dataset's files are missing and cannot be downloaded (offline, blocked, disabled).

    Attributes: ``folder`` (where the files belong), ``url`` (the failing URL, or None),
    ``missing`` (local names still missing, e.g. ``["images/3.png", ...]``).
    """

    def __init__(self, message: str, *, folder: Optional[Path] = None, url: Optional[str] = None,
                 missing: Sequence[str] = ()):
        super().__init__(message)  # one argument: str(exc) is the message itself
        self.folder, self.url, self.missing = folder, url, list(missing)


class ChecksumMismatch(DatasetUnavailable):
    """A file's sha256 differs from :data:`SHA256`.  Attribute ``name``: the file (e.g. ``labels/3.png``)."""

    def __init__(self, message: str, *, name: str, **kwargs):
        super().__init__(message, **kwargs)
        self.name = name


# ---------------------------------------------------------------------------------------------
# Where the files live
# ---------------------------------------------------------------------------------------------
def isbi2012_folder(root: Optional[PathLike] = None) -> Path:
    """The folder holding ``images/`` and ``labels/``: ``root``, else
    ``$UNETLIB_DATA_DIR/isbi2012``, else ``$XDG_CACHE_HOME/unetlib/isbi2012`` (default
    ``~/.cache/unetlib/isbi2012``).  Nothing is created here."""
    if root is not None:
        return Path(root).expanduser()
    data_dir = os.environ.get(ENV_DATA_DIR)
    if data_dir:
        return Path(data_dir).expanduser() / "isbi2012"
    cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "unetlib" / "isbi2012"


def _remote_name(name: str) -> str:
    """Local ``images/3.png`` -> upstream ``image/3.png`` (the upstream folders are singular)."""
    folder, file = name.split("/")
    return f"{folder[:-1]}/{file}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_folder(folder: Path) -> tuple[list[str], list[str]]:
    """(missing, corrupt): local names absent from ``folder`` / present with a wrong sha256."""
    missing, corrupt = [], []
    for name, expected in SHA256.items():
        path = folder / name
        if not path.is_file():
            missing.append(name)
        elif _sha256(path) != expected:
            corrupt.append(name)
    return missing, corrupt


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} files)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing an existing ``part`` with an HTTP Range request.

    A server that ignores Range answers 200 with the whole file: then ``part`` is rewritten
    from the start instead of being appended to (which would corrupt it).
    """
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "unetlib (U-Net course)"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # "Range Not Satisfiable": the .part is as long as the file or longer
            exc.close()
            part.unlink()
            return _fetch(url, part, timeout)
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = start > 0 and response.status == 206 and content_range.startswith(f"bytes {start}-")
        length = response.headers.get("Content-Length")
        received = 0
        part.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered
        with open(part, "ab" if resumed else "wb") as f:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                f.write(chunk)
                received += len(chunk)
    # urllib returns a connection that closed early as a normal end of file; treat it as the
    # network failure it is, so that the .part is kept and the next call resumes it.
    if length is not None and length.isdigit() and received < int(length):
        raise http.client.IncompleteRead(b"", int(length) - received)


def _download_verified(base_url: str, folder: Path, name: str, timeout: float, missing: list[str]) -> None:
    """Download one file, check its sha256 and move it into place; at most two tries."""
    url = f"{base_url.rstrip('/')}/{_remote_name(name)}"
    target = folder / name
    part = target.with_name(target.name + ".part")
    got = ""
    for _ in range(2):  # a corrupted transfer gets one fresh retry
        try:
            _fetch(url, part, timeout)
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, urllib.error.HTTPError):  # the server answered, but not with the file
                what = f"the server answered HTTP {exc.code} {exc.reason} for {url} (is the base URL right?)"
            else:
                what = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc} while fetching {url}"
            raise DatasetUnavailable(
                f"cannot download the ISBI 2012 data: {what}. "
                f"Connect to the internet and call again (finished files are kept, a partial one resumes), "
                f"or set {ENV_URL} / base_url= to a reachable mirror, or put the files into {folder} "
                f"yourself: {_EXPECTED}, from {ISBI2012_URL}/image/N.png and .../label/N.png. "
                f"Still missing: {_short_list(missing)}.",
                folder=folder, url=url, missing=missing,
            ) from exc
        got = _sha256(part)
        if got == SHA256[name]:
            os.replace(part, target)  # atomic: the final name only ever holds verified bytes
            return
        part.unlink()  # never resume from bytes that are known to be wrong
    raise ChecksumMismatch(
        f"{name}: the file downloaded from {url} has sha256 {got}, expected {SHA256[name]} "
        f"(tried twice). The server or a proxy delivers different bytes; use another mirror "
        f"({ENV_URL} / base_url=) or copy the verified files into {folder}.",
        name=name, folder=folder, url=url, missing=missing,
    )


def download_isbi2012(root: Optional[PathLike] = None, base_url: Optional[str] = None, *,
                      download: bool = True, timeout: float = 30.0) -> Path:
    """Make sure all 60 files are in the folder and verified; return the folder.

    Missing files, and files whose sha256 is wrong, are downloaded (``download=True``), each
    at most twice; files that are already right are never fetched again.

    Args:
        root: the dataset folder (default: see :func:`isbi2012_folder`).
        base_url: where to download from (default ``$UNETLIB_ISBI2012_URL``, else
            :data:`ISBI2012_URL`); it must serve ``BASE/image/N.png`` and ``BASE/label/N.png``.
        download: False = only check, never touch the network.
        timeout: seconds a connection may stall before the download counts as failed.

    Raises:
        DatasetUnavailable: files missing and ``download=False``, or the download failed.
        ChecksumMismatch: a file has the wrong sha256 (``download=False``), or its
            download still had the wrong sha256 on the second try.
    """
    folder = isbi2012_folder(root)
    missing, corrupt = _check_folder(folder)
    if not missing and not corrupt:
        return folder
    if not download:
        if corrupt:
            raise ChecksumMismatch(
                f"{folder / corrupt[0]}: sha256 differs from the one unetlib expects "
                f"({len(corrupt)} such file(s): {_short_list(corrupt)}). The file is damaged or is not the "
                f"ISBI 2012 slice of that name: delete it and call isbi2012(download=True), or copy a good one.",
                name=corrupt[0], folder=folder, missing=missing,
            )
        raise DatasetUnavailable(
            f"ISBI 2012 data not found in {folder} ({len(missing)} of 60 files missing: {_short_list(missing)}). "
            f"Put {_EXPECTED} there, or pass root=FOLDER / set {ENV_DATA_DIR} (which holds isbi2012/), "
            f"or call isbi2012(download=True) to fetch them from {ISBI2012_URL}.",
            folder=folder, missing=missing,
        )
    from tqdm.auto import tqdm

    base_url = base_url or os.environ.get(ENV_URL) or ISBI2012_URL
    todo = [name for name in SHA256 if name in set(missing) | set(corrupt)]  # stack order
    remaining = list(todo)
    # disable=None: the bar shows on a terminal or in a notebook, and is silent in logs and CI.
    with tqdm(total=len(todo), unit="file", desc="ISBI 2012", disable=None) as bar:
        for name in todo:
            bar.set_postfix_str(name)
            _download_verified(base_url, folder, name, timeout, remaining)
            remaining.remove(name)
            bar.update(1)
    return folder


# ---------------------------------------------------------------------------------------------
# Loading and splitting
# ---------------------------------------------------------------------------------------------
def isbi2012(root: Optional[PathLike] = None, download: bool = True, base_url: Optional[str] = None, *,
             timeout: float = 30.0) -> list[LabeledImage]:
    """The 30 ISBI 2012 training slices, verified, as LabeledImages.

    Args:
        root, base_url, download, timeout: see :func:`download_isbi2012`.

    Returns:
        30 :class:`LabeledImage`, in stack order (``meta["slice"]`` = 0..29, name
        ``isbi2012_NN``): ``image`` float32 (1, 512, 512), normalised like every folder image
        (1st/99th percentile -> 0/1); ``instances`` int32 (512, 512), 0 = membrane, 1..K = the
        cells.  ``mask`` is then 1 on cells (label 255) and 0 on membranes (label 0).

    The cells are the **4-connected** components of the label-255 pixels: two pixels that touch
    only at a corner stay in different cells.  The membranes are often a single pixel wide and
    run diagonally; with 8-connectivity a diagonal one-pixel membrane would not separate the
    cells on its two sides, they would merge into one instance and the weight map would lose the
    thin gap it is meant to emphasise.  The challenge's own scoring (Fiji) also labels 4-connected.
    """
    folder = download_isbi2012(root, base_url, download=download, timeout=timeout)
    items = []
    for n in range(N_SLICES):
        image_path, label_path = folder / "images" / f"{n}.png", folder / "labels" / f"{n}.png"
        items.append(LabeledImage(
            image=read_image(image_path, color="gray"),
            instances=read_mask(label_path, mask_type="binary"),  # 255 -> cell, 4-connected
            name=f"isbi2012_{n:02d}",
            meta={"slice": n, "image_path": str(image_path), "label_path": str(label_path)},
        ))
    return items


def isbi2012_split(images: Sequence[LabeledImage], val_slices: int = 5
                   ) -> tuple[list[LabeledImage], list[LabeledImage], list[LabeledImage]]:
    """The course's fixed split of the stack: (train, validation, test) lists of LabeledImage.

    * test: slices 25-29 (:data:`ISBI2012_TEST_SLICES`), the last five of the stack, never
      used for training or model selection;
    * validation: the last ``val_slices`` of slices 0-24 (default 20-24);
    * train: the rest (default 0-19).

    Why not a random split: the slices are consecutive sections of one block of tissue, about
    50 nm apart, so neighbouring slices show the same cells at almost the same place.  A random
    split puts near-copies of each test slice into the training set and the test score
    measures memory, not generalisation.  Contiguous blocks share only one neighbouring pair at
    each border (24|25, and 19|20 for validation).

    Args:
        images: the 30 slices from :func:`isbi2012` (matched by ``meta["slice"]``, else by position).
        val_slices: number of validation slices, 0..24.
    """
    images = list(images)
    if len(images) != N_SLICES:
        raise ValueError(f"isbi2012_split needs the 30 slices returned by isbi2012(), got {len(images)} item(s).")
    if not 0 <= val_slices < len(ISBI2012_TRAIN_SLICES):
        raise ValueError(f"val_slices must be in 0..{len(ISBI2012_TRAIN_SLICES) - 1}, got {val_slices}.")
    by_slice = {int(item.meta.get("slice", i)): item for i, item in enumerate(images)}
    if sorted(by_slice) != list(range(N_SLICES)):
        raise ValueError("isbi2012_split needs slices 0..29 once each (meta['slice']); got "
                         f"{sorted(by_slice)}.")
    n_train = len(ISBI2012_TRAIN_SLICES) - val_slices
    train = [by_slice[i] for i in ISBI2012_TRAIN_SLICES[:n_train]]
    val = [by_slice[i] for i in ISBI2012_TRAIN_SLICES[n_train:]]
    test = [by_slice[i] for i in ISBI2012_TEST_SLICES]
    return train, val, test
