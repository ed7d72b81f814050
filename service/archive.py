"""Safe unpacking of an uploaded image folder archive (`.tar`, `.tar.gz`/`.tgz`, `.zip`).

Nothing in an archive is trusted: a member with an absolute path, a `..` part, a backslash or
a NUL, and any link or special file refuse the whole archive; only regular files and folders
are written, each through a path built from checked parts under the destination. Sizes are
counted on the bytes actually decompressed, not on the headers, so a zip or gzip bomb stops at
the limit; the file count is bounded too. Hidden files and `__MACOSX/` are skipped. The tree
found (one wrapping folder is looked through) must be an image folder in either layout
(`pruning.imagefolder`), a mask folder for segmentation (`images/` + `masks/`,
`pruning.segmentation.folder`) or a YOLO or COCO layout for detection
(`pruning.detection.folder`), and every image (and mask) in it must decode, within a pixel
limit; a mask folder's pairs must match (each mask the size of its image, class indices within
classes.txt); a detection set's labels must parse, name known classes and stay on their images
(what was clipped or skipped is counted in `DatasetFacts.boxes`). Files the folder does not
read are not kept."""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pruning.detection.folder import LABEL_PARTS, box_format, check_image_sizes, scan_boxfolder
from pruning.errors import PruningError
from pruning.imagefolder import SPLIT_NAMES, ImageFolderIndex, image_channels, imagefolder_shape, scan_imagefolder
from pruning.segmentation.folder import CLASSES_FILE, check_pair, count_classes, is_maskfolder, scan_maskfolder

from .text import excerpt

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
CHUNK = 1 << 20
# What reading a broken, truncated or unsupported archive raises (OSError covers gzip's errors).
MALFORMED = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)
NAME_MAX = 255  # bytes of one file or folder name the file systems we run on hold
TAR_HEADER_SLACK = 1024  # bytes of tar headers and padding allowed per member beyond its data


class ArchiveError(ValueError):
    """A refused archive: a one-line message and the HTTP status it answers (413 when over a
    size or count limit, else 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds on one archive's contents."""

    max_bytes: int  # total bytes of the extracted files
    max_files: int  # files (members that are not folders)
    max_image_pixels: int  # width x height of any one image


@dataclass
class DatasetFacts:
    """What an unpacked archive holds."""

    root: Path
    layout: str
    classes: list[str]
    in_channels: int
    images: dict[str, int]
    task: str = "classification"  # or "segmentation": a mask folder; "detection": a YOLO or COCO layout
    boxes: dict[str, Any] | None = None  # detection: the format and `BoxCounts` (objects, clipped, skipped)


def archive_suffix(filename: str) -> str:
    """The accepted suffix a file name ends with (ArchiveError if none)."""
    lower = filename.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    raise ArchiveError(f"file: must be a {', '.join(SUFFIXES)} archive, got {excerpt(filename) or 'no name'!r}")


def member_path(name: str) -> PurePosixPath | None:
    """The checked relative path of an archive member, None for one to skip (hidden files,
    `__MACOSX/`, the root itself); ArchiveError for an unsafe name or one the file system
    cannot hold (a part over `NAME_MAX` bytes)."""
    shown = repr(excerpt(name))
    if "\x00" in name or "\\" in name:
        raise ArchiveError(f"unsafe archive member {shown}: backslash or NUL in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"unsafe archive member {shown}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"unsafe archive member {shown}: '..' in its path")
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise ArchiveError(f"archive member {shown}: a name longer than {NAME_MAX} bytes")
    return PurePosixPath(*parts)


class _Counted(io.RawIOBase):
    """A read-only stream that raises ArchiveError (413) once more than `limit` bytes came
    through it: the decompressed stream of a tar, whatever its headers claim."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise ArchiveError(f"file: the archive unpacks to more than {self.limit:,} bytes", 413)
        buffer[: len(data)] = data
        return len(data)


class _Writer:
    """Writes checked members under `dest`, counting files and bytes against the limits."""

    def __init__(self, dest: Path, limits: Limits) -> None:
        self.dest, self.limits = dest, limits
        self.files = self.bytes = 0

    def folder(self, rel: PurePosixPath) -> None:
        self.dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)

    def file(self, rel: PurePosixPath, name: str, src: IO[bytes]) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ArchiveError(f"file: the archive holds more than {self.limits.max_files:,} files", 413)
        target = self.dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:  # "x": a repeated name cannot overwrite an earlier file
            while chunk := src.read(CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.limits.max_bytes:
                    raise ArchiveError(f"file: the archive unpacks to more than {self.limits.max_bytes:,} bytes", 413)
                out.write(chunk)


def _tar_members(archive: Path, limits: Limits, writer: _Writer) -> None:
    with open(archive, "rb") as raw_file:
        magic = raw_file.read(2)
        raw_file.seek(0)
        raw: io.BufferedIOBase = gzip.GzipFile(fileobj=raw_file) if magic == b"\x1f\x8b" else raw_file
        cap = limits.max_bytes + TAR_HEADER_SLACK * (limits.max_files + 16)
        stream = io.BufferedReader(_Counted(raw, cap), CHUNK)
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                rel = member_path(m.name)
                if m.issym() or m.islnk():
                    raise ArchiveError(f"unsafe archive member {excerpt(m.name)!r}: a link")
                if not (m.isdir() or m.isfile()):
                    raise ArchiveError(f"unsafe archive member {excerpt(m.name)!r}: not a regular file or folder")
                if rel is None:
                    continue
                if m.isdir():
                    writer.folder(rel)
                    continue
                src = tf.extractfile(m)
                if src is None:
                    raise ArchiveError(f"file: archive member {excerpt(m.name)!r} cannot be read")
                writer.file(rel, m.name, src)


def _zip_members(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = member_path(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip names no file type
            if kind == stat.S_IFLNK:
                raise ArchiveError(f"unsafe archive member {excerpt(info.filename)!r}: a link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"unsafe archive member {excerpt(info.filename)!r}: not a regular file or folder")
            if rel is None:
                continue
            if info.is_dir():
                writer.folder(rel)
                continue
            with zf.open(info) as src:
                writer.file(rel, info.filename, src)


def extract(archive: Path, suffix: str, dest: Path, limits: Limits) -> int:
    """Unpack `archive` into the empty folder `dest` (see the module docstring); returns the
    number of files written. ArchiveError on anything refused, the archive's fault or not."""
    writer = _Writer(dest, limits)
    dest.mkdir(parents=True, exist_ok=True)  # the tree exists even when every member is skipped
    try:
        if suffix == ".zip":
            _zip_members(archive, writer)
        else:
            _tar_members(archive, limits, writer)
    except ArchiveError:
        raise
    except FileExistsError as exc:
        raise ArchiveError(f"file: the archive holds {Path(str(exc.filename)).name!r} twice") from exc
    except MALFORMED as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(f"file: malformed {suffix} archive ({first.replace(str(dest), '')})") from exc
    return writer.files


MASK_PARTS = ("images", "masks", *LABEL_PARTS)
"""The folders of a mask folder or a detection layout (a lone one is a part of it, not a wrapper)."""


def tree_root(dest: Path) -> Path:
    """The image folder in an unpacked archive: `dest`, or the folder that alone wraps it
    (`mydata/train/...`; a lone train/ or val/ is a split, a lone images/ half a mask folder or
    a detection layout, not a wrapper)."""
    root = dest
    for _ in range(8):
        entries = list(root.iterdir())
        wrapped = len(entries) == 1 and entries[0].is_dir()
        name = entries[0].name
        if not wrapped or name in MASK_PARTS or any(name in names for names in SPLIT_NAMES.values()):
            return root
        root = entries[0]
    return root


def _all_images(index: ImageFolderIndex) -> Iterator[str]:
    for part in (index.train, index.val, index.test):
        for path, _ in part or ():
            yield path


def check_images(paths: Iterable[str], dest: Path, limits: Limits) -> None:
    """Decode every image in full (ArchiveError naming the first that fails, or, 413, the first
    over the pixel limit, whether its header says so or Pillow's decompression-bomb check does)."""
    from PIL import Image

    for path in paths:
        name = Path(path).relative_to(dest).as_posix()
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > limits.max_image_pixels:
                    raise ArchiveError(
                        f"image {name} is {w} x {h} pixels, over the {limits.max_image_pixels:,} pixel limit", 413
                    )
                img.load()
        except ArchiveError:
            raise
        except Image.DecompressionBombError as exc:  # a header claiming far more pixels than Pillow allows
            raise ArchiveError(f"image {name} is over the {limits.max_image_pixels:,} pixel limit", 413) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ArchiveError(f"image {name} does not decode ({first.replace(path, name)})") from exc


def drop_unread(dest: Path, kept: set[str]) -> int:
    """Remove every file under `dest` but the `kept` paths (notes, scripts, files beside the
    class folders), so only what the folder reads is stored; returns how many were removed."""
    dropped = 0
    for path in [p for p in dest.rglob("*") if p.is_file()]:
        if str(path) not in kept:
            path.unlink()
            dropped += 1
    return dropped


def _relative(msg: str, root: Path, dest: Path) -> str:
    """A message with the unpack folder's paths made relative to the archive."""
    return msg.replace(f"{root}/", "").replace(str(root), "the archive").replace(str(dest), "the archive")


def _image_folder(root: Path, dest: Path, limits: Limits) -> DatasetFacts:
    """The facts of an image folder at `root` (class folders, or unlabelled images for the tasks
    that read none), every image decoded."""
    index = scan_imagefolder(root, labels=False)
    check_images(_all_images(index), dest, limits)
    channels, _ = imagefolder_shape(root, labels=False)
    drop_unread(dest, set(_all_images(index)))
    images = {"train": len(index.train)}
    images.update({k: len(v) for k, v in (("val", index.val), ("test", index.test)) if v is not None})
    return DatasetFacts(root, index.layout, index.classes, channels, images)


def _mask_folder(root: Path, dest: Path, limits: Limits) -> DatasetFacts:
    """The facts of a mask folder at `root`: every image and mask decoded, every pair checked
    (sizes, class indices), the classes counted (classes.txt's, or "0".."K-1" from the largest
    index, then written to classes.txt)."""
    index = scan_maskfolder(root)
    pairs = index.pairs()
    check_images((p for pair in pairs for p in pair), dest, limits)
    num_classes = len(index.classes) if index.classes is not None else None
    for pair in pairs:
        shown = (Path(pair[0]).relative_to(root).as_posix(), Path(pair[1]).relative_to(root).as_posix())
        check_pair(pair, num_classes, shown)
    classes = count_classes(index)
    channels = image_channels([img for img, _ in index.train[:64]])
    if index.classes is None:  # stored with the counted names, so no reader counts again
        (root / CLASSES_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
    drop_unread(dest, {p for pair in pairs for p in pair} | {str(root / CLASSES_FILE)})
    images = {"train": len(index.train)}
    images.update({k: len(v) for k, v in (("val", index.val), ("test", index.test)) if v is not None})
    return DatasetFacts(root, index.layout, classes, channels, images, task="segmentation")


def _box_folder(root: Path, dest: Path, limits: Limits) -> DatasetFacts:
    """The facts of a YOLO or COCO folder at `root`: every label read and checked, every image
    decoded (and, for COCO, its size checked against its JSON)."""
    index = scan_boxfolder(root)
    check_images((path for path, _ in index.samples()), dest, limits)
    check_image_sizes(index)
    channels = image_channels([img for img, _ in index.train[:64]])
    drop_unread(dest, index.files)
    images = {"train": len(index.train)}
    images.update({k: len(v) for k, v in (("val", index.val), ("test", index.test)) if v is not None})
    boxes = {"format": index.format, **index.counts.as_dict()}
    return DatasetFacts(index.root, index.layout, index.classes, channels, images, task="detection", boxes=boxes)


def unpack_dataset(archive: Path, suffix: str, dest: Path, limits: Limits) -> DatasetFacts:
    """Extract an archive into `dest`, find its image folder or mask folder and check it: the
    facts of the data set, or ArchiveError (the caller removes `dest`)."""
    extract(archive, suffix, dest, limits)
    if not any(dest.iterdir()):  # empty, or every member skipped
        raise ArchiveError(
            "file: the archive holds no class folders (expected <class>/*.png or train/<class>/*, images/ "
            "and masks/ for segmentation, or a YOLO or COCO layout for detection; hidden files and folders "
            "and __MACOSX/ are skipped)"
        )
    root = tree_root(dest)
    try:
        if box_format(root) is not None:
            return _box_folder(root, dest, limits)
        if is_maskfolder(root):
            return _mask_folder(root, dest, limits)
        return _image_folder(root, dest, limits)
    except PruningError as exc:
        raise ArchiveError(_relative(str(exc), root, dest)) from exc


def move_tree(src: Path, dest: Path) -> Path:
    """Move an unpacked tree into place (an identical tree already there is kept)."""
    if dest.exists():
        shutil.rmtree(src, ignore_errors=True)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dest)
    return dest
