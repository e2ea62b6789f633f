"""Classification images in a torchvision ImageFolder tree: ``ROOT/<class>/<image>``.

Class indices follow torchvision: the SORTED names of the class folders, so an ImageNet
validation folder with one folder per synset (``n01440764`` ...) gives ImageNet's class order and
matches CLIP_benchmark and Babel-ImageNet labels. Every folder is a class, even an empty one (so
indices never shift when a class has no images); folders whose name starts with ``.`` (such as
``.ipynb_checkpoints``) are not classes. Images are the files under a class folder, at any depth,
with the extensions in :data:`IMAGE_EXTENSIONS` (any letter case), in sorted order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter

from .base import ImageItem, file_fingerprint

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class ImageFolderSet:
    """The images of an ImageFolder tree; ``classes[i]`` is the folder name of class ``i``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(
                f"ImageFolder '{self.root}' is not a directory; give the folder that "
                f"holds one sub-folder per class"
            )
        self.classes: list[str] = sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_dir() and not entry.name.startswith(".")
        )
        if not self.classes:
            raise ConfigError(
                f"ImageFolder '{self.root}' has no class sub-folders; the layout is "
                f"ROOT/<class>/<image>.jpg"
            )
        self.description = f"ImageFolder '{self.root}'"
        self._files: list[tuple[Path, int]] | None = None

    def files(self) -> list[tuple[Path, int]]:
        """Every (image path, class index), classes in index order and files sorted within each."""
        if self._files is None:
            found: list[tuple[Path, int]] = []
            for label, name in enumerate(self.classes):
                # torchvision's order: folders sorted by path, files sorted within each folder
                for directory, _, names in sorted(os.walk(self.root / name, followlinks=True)):
                    found.extend(
                        (Path(directory) / file, label)
                        for file in sorted(names)
                        if file.lower().endswith(IMAGE_EXTENSIONS)
                    )
            self._files = found
        return self._files

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every image as an ImageItem with ``path``, ``label`` and the relative path as ``key``;
        nothing is skipped here (an unreadable file fails, and is counted, when it is opened)."""
        for path, label in self.files():
            yield ImageItem(key=path.relative_to(self.root).as_posix(), path=path, label=label)

    def fingerprint(self, state: bool = False) -> str:
        """A hash of the class names and the image files' relative names and sizes (``state``:
        and their mtimes and contents)."""
        return file_fingerprint(
            self.root,
            [path for path, _ in self.files()],
            extra="\n".join(self.classes),
            state=state,
        )
