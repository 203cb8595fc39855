"""Images of dataset rows, decoded lazily: a row's image is decoded once, when a sample needs it,
and a broken image becomes an error message for that sample (never an exception)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(eq=False)
class ImageRef:
    """A not-yet-decoded image: row ``index`` of a table. Decoded once, shared by its samples."""

    table: Any  # a harness.tasks.data table: .image(index) and .base_dir
    index: int
    _cache: Any = field(default=None, repr=False)

    def resolve(self, load: bool = True) -> tuple[Any, str | None]:
        if self._cache is None:
            self._cache = decode_image(self.table.image(self.index), self.table.base_dir, load=load)
        return self._cache


EAGER_DECODE_MAX = 2000  # up to this many samples, images are fully decoded (and checked) at load


def decode_image(value, base_dir: Path | None = None, load: bool = True) -> tuple[Any, str | None]:
    """Raw image value -> ``(PIL image, None)`` or ``(None, error message)``; never raises.

    ``load=True`` decodes the pixels now (a corrupt body is caught here) and converts to RGB.
    ``load=False`` only parses the header: the image holds its compressed bytes and decodes on
    first use (big evaluation sets stay small in memory); convert it to RGB where it is used."""
    from PIL import Image

    if value is None:
        return None, "missing image"
    try:
        if isinstance(value, Image.Image):
            img = value
        else:
            if isinstance(value, dict):
                data, path = value.get("bytes"), value.get("path")
                if isinstance(data, str):
                    data = base64.b64decode(data)
            elif isinstance(value, (bytes, bytearray)):
                data, path = bytes(value), None
            elif isinstance(value, str):
                if value.startswith("data:"):
                    data, path = base64.b64decode(value.split(",", 1)[1]), None
                else:
                    data, path = None, value
            else:
                return None, f"unreadable image: unsupported value of type {type(value).__name__}"
            if data:
                img = Image.open(io.BytesIO(data))
            elif path:
                p = Path(path)
                if not p.is_absolute() and base_dir is not None:
                    p = base_dir / p
                img = Image.open(io.BytesIO(p.read_bytes()))  # no open file handle left behind
            else:
                return None, "missing image"
        if not load:
            return img, None
        img.load()
        return (img if img.mode == "RGB" else img.convert("RGB")), None
    except Exception as exc:  # corrupt bytes, missing file, truncated PNG ...
        return None, f"unreadable image: {_image_error_text(exc)}"


def _image_error_text(exc: Exception) -> str:
    """``Type: first line`` without object reprs (``<_io.BytesIO object at 0x7f...>``): the text of
    a failed sample is the same in every run, so runs and resumed runs compare equal."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "UnidentifiedImageError: not an image format Pillow can read"
    msg = str(exc).splitlines()[0] if str(exc) else ""
    msg = re.sub(r"<[^<>]*? at 0x[0-9a-fA-F]+>", "<object>", msg)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
