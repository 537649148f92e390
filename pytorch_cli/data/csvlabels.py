"""--labels FILE.csv: a folder's classes from a CSV file instead of class subfolders, the way
Kaggle hands out images (train.csv beside train/) and fastai's ImageDataLoaders.from_csv reads
them. A header row, then one row per image: its path relative to --data-dir first (the extension
may be left out, as Kaggle's ids leave it), its class second; further columns are not read.

Classes sort as numbers when every one is an integer (2 before 10), else as text. The images are
then found, decoded and held out (--test-split) as a folder of class subfolders is; a listed file
that is missing or no image is skipped and counted as an unreadable one is.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from pytorch_cli.data.folders import IMAGE_EXTENSIONS, Found
from pytorch_cli.platform import files
from pytorch_cli.platform.errors import PtrainError, plural, warn

MAX_BYTES = 512 << 20  # 512 MiB: ~10 million rows; beyond that it is not a labels file


def _rows(path: Path) -> tuple[list[str], list[tuple[int, str, str]]]:
    """The header, and (line, image, class) of every row after it; blank lines are skipped."""
    text = files.read_text(path, MAX_BYTES, f"--labels {path}", PtrainError)
    out, reader = [], csv.reader(io.StringIO(text, newline=""))  # quoted newlines too
    try:
        header = next(reader, [])
        if len(header) < 2:
            raise PtrainError(f"--labels {path}: its first row must name two columns (the image, "
                              f"its class), got {header!r}")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise PtrainError(f"--labels {path}, line {reader.line_num}: {row!r} is not an "
                                  "image and its class")
            out.append((reader.line_num, row[0].strip(), row[1].strip()))
    except csv.Error as e:
        raise PtrainError(f"--labels {path}, line {reader.line_num}: not CSV ({e})") from None
    return header, out


def _inside(root: Path, name: str, path: Path, line: int) -> Path:
    """root/name, refused when name leaves root (absolute, or through ..)."""
    relative = os.path.normpath(name)
    if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
        raise PtrainError(f"--labels {path}, line {line}: {name!r} is not inside --data-dir "
                          f"{root}; list the images by their path relative to it")
    return root / relative


class _Finder:
    """A listed name as a file: as it is, or, without an image extension, the one file of that
    name plus one (each folder listed once, indexed by those names)."""

    def __init__(self):
        self._index: dict[Path, dict[str, list[str]]] = {}

    def _folder(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._index:
            index: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                stem, extension = os.path.splitext(name)
                if extension.lower() in IMAGE_EXTENSIONS:
                    index.setdefault(stem, []).append(name)
            self._index[folder] = index
        return self._index[folder]

    def __call__(self, target: Path) -> tuple[Path | None, str]:
        if target.suffix.lower() in IMAGE_EXTENSIONS:
            if target.is_file():
                return target, ""
            return None, f"{target}: listed, but not there" if not target.exists() else \
                f"{target}: listed, but not a file"
        found = self._folder(target.parent).get(target.name, [])
        if not found and target.exists():  # a .gif, a folder: there, but no image ptrain reads
            what = "a folder" if target.is_dir() else "not an image file"
            return None, f"{target}: listed, but {what} ({', '.join(IMAGE_EXTENSIONS)})"
        if len(found) != 1:
            why = "no" if not found else f"{len(found)} ({', '.join(found[:3])})"
            return None, f"{target}: listed, {why} image files of that name"
        return target.parent / found[0], ""


def sort_classes(names: set[str]) -> list[str]:
    """As numbers when every name is an integer (2 before 10), else as text."""
    try:
        return sorted(names, key=lambda name: (int(name), name))  # "01" beside "1": both, in order
    except ValueError:
        return sorted(names)


def find(root: Path, path: Path, least: int = 2) -> Found:
    """The classes and files the CSV at path lists, under root; their test images are held out
    by --test-split (test None)."""
    if not root.is_dir():
        raise PtrainError(f"--dataset folder: {root} is not a folder; pass --data-dir DIR, the "
                          f"folder the images {path} lists are in")
    (header, rows), skipped, finder = _rows(path), [], _Finder()

    def names_image(name: str) -> bool:
        try:
            return finder(_inside(root, name.strip(), path, 1))[0] is not None
        except PtrainError:  # outside --data-dir: no image of the folder's
            return False
    if names_image(header[0]):  # a CSV without a header: its first image would go unsaid
        warn(f"--labels {path}: its first row, read as the header, names an image "
             f"({header[0].strip()!r}), which is left out; give the CSV a header row "
             "(image,class) to train on it")
    chosen: dict[Path, tuple[str, int]] = {}  # file -> (class, line)
    for line, name, label in rows:
        file, why = finder(_inside(root, name, path, line))
        if file is None:
            skipped.append(why)
            continue
        if chosen.setdefault(file, (label, line))[0] != label:
            raise PtrainError(f"--labels {path}: {name!r} is {chosen[file][0]!r} on line "
                              f"{chosen[file][1]} and {label!r} on line {line}; an image has one "
                              "class")
    classes = sort_classes({label for label, _ in chosen.values()})
    if not chosen and rows and names_image(rows[0][2]):
        raise PtrainError(f"--labels {path}: its columns are the other way round (line "
                          f"{rows[0][0]}: {rows[0][1]!r}, {rows[0][2]!r}): the image's path goes "
                          "first, its class second")
    if not chosen and rows:  # a moved folder, another --data-dir, Windows' \\ in the paths
        raise PtrainError(f"--labels {path}: none of its {plural(len(rows), 'file')} is under "
                          f"{root} (line {rows[0][0]}: {rows[0][1]!r}); pass --data-dir, the "
                          "folder its paths are relative to")
    if len(classes) < least:
        raise PtrainError(f"--labels {path}: {plural(len(classes), 'class', 'classes')} among "
                          f"the images found ({plural(len(rows), 'row')})" +
                          ("; a classifier needs at least 2" if least > 1 else ""))
    index = {c: i for i, c in enumerate(classes)}
    train = sorted(((f, index[c]) for f, (c, _) in chosen.items()), key=lambda r: (r[1], r[0]))
    return Found(classes, train, None, skipped, root)
