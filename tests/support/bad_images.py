"""Files that are not usable images, each with the reason shiwu must give for it."""

import os
import struct
import zlib

from support.photos import DATA


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


BAD_FILES = {
    "missing.jpg": ("file not found", None),
    "folder.jpg": ("is a directory", None),
    "empty.jpg": ("empty file", b""),
    "notes.jpg": ("not a recognised image format", "这不是图片, just text\n".encode()),
    "random.bin": ("not a recognised image format", bytes(range(256)) * 4),
    "drawing.svg": ("SVG", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
    "truncated.jpg": ("corrupt or truncated", (DATA / "chelsea.jpg").read_bytes()[:5000]),
    "bomb.png": ("too large", png_claiming(60000, 60000)),
    "dangling.jpg": ("broken symbolic link", None),
}


def make_bad_files(folder):
    (folder / "folder.jpg").mkdir()
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    for name, (_, data) in BAD_FILES.items():
        if data is not None:
            (folder / name).write_bytes(data)
    return [folder / name for name in BAD_FILES]
