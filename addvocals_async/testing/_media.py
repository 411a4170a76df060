"""Tiny but genuine media files, built in code, for the URLs the simulator hands out.

A download test is only worth something if the bytes are what a real client would get: an
MP3 that a decoder accepts and a JPEG that an image library opens. Shipping binary fixtures
would work too, but generating them keeps the package small and lets every track get its own
file (a test can tell the two tracks of a task apart by their bytes).
"""

from __future__ import annotations

import struct

__all__ = ["jpeg_bytes", "mp3_bytes"]

# MPEG-1 Layer III, no CRC, 128 kbit/s, 44.1 kHz, mono, "original" flag set:
# 1111_1111 1111_1011 1001_0000 1100_0100. A frame is 144 * 128000 / 44100 = 417 bytes.
_MP3_HEADER = bytes((0xFF, 0xFB, 0x90, 0xC4))
_MP3_FRAME_SIZE = 417
_MP3_SIDE_INFO_SIZE = 17  # mono, MPEG-1


def mp3_bytes(seed: bytes, frames: int) -> bytes:
    """``frames`` silent MPEG-1 Layer III frames; ``seed`` goes into the first frame's
    ancillary bytes so that files with the same length still differ.

    All-zero side information means ``part2_3_length == 0`` and ``main_data_begin == 0``:
    every granule decodes to silence and no frame borrows from the bit reservoir, so the
    bytes after the side information are ancillary data that decoders skip.
    """
    if frames < 1:
        raise ValueError("an MP3 needs at least one frame")
    payload = _MP3_FRAME_SIZE - len(_MP3_HEADER) - _MP3_SIDE_INFO_SIZE
    side_info = bytes(_MP3_SIDE_INFO_SIZE)
    first_ancillary = seed[:payload].ljust(payload, b"\x00")
    silent = _MP3_HEADER + side_info + bytes(payload)
    return _MP3_HEADER + side_info + first_ancillary + silent * (frames - 1)


def _segment(marker: int, body: bytes) -> bytes:
    """A JPEG marker segment: marker, then a big-endian length that counts itself."""
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _single_code_huffman_table(table_class: int, symbol: int) -> bytes:
    """A DHT body holding exactly one code, ``0`` (one bit long), for ``symbol``."""
    counts = bytes((1,) + (0,) * 15)
    return bytes((table_class << 4,)) + counts + bytes((symbol,))


def jpeg_bytes(gray: int) -> bytes:
    """An 8×8 baseline JPEG of a flat grey ``gray`` (0-255).

    One block, one component, a quantisation table of ones and one-code Huffman tables:
    the DC table codes only the needed magnitude category, the AC table only end-of-block.
    The entropy-coded data is then ``0`` (DC category), the DC bits, ``0`` (EOB), padded
    with one bits, which keeps the whole file a few hundred bytes and fully decodable.
    """
    gray = max(0, min(255, gray))
    dc = (gray - 128) * 8  # a flat block's DC coefficient, with an all-ones quant table
    category = abs(dc).bit_length()
    bits = "0"  # the DC table's only code
    if category:
        value = dc if dc > 0 else dc + (1 << category) - 1  # JPEG's one's-complement form
        bits += format(value, f"0{category}b")
    bits += "0"  # the AC table's only code: end of block
    bits += "1" * (-len(bits) % 8)
    scan = bytearray()
    for i in range(0, len(bits), 8):
        byte = int(bits[i : i + 8], 2)
        scan.append(byte)
        if byte == 0xFF:
            scan.append(0x00)  # byte stuffing
    jfif = b"JFIF\x00" + bytes((1, 1, 0)) + struct.pack(">HH", 1, 1) + bytes((0, 0))
    quant = bytes((0,)) + bytes((1,) * 64)
    frame = bytes((8,)) + struct.pack(">HH", 8, 8) + bytes((1, 1, 0x11, 0))
    scan_header = bytes((1, 1, 0x00, 0, 63, 0))
    return b"".join(
        (
            b"\xff\xd8",
            _segment(0xE0, jfif),
            _segment(0xDB, quant),
            _segment(0xC0, frame),
            _segment(0xC4, _single_code_huffman_table(0, category)),
            _segment(0xC4, _single_code_huffman_table(1, 0x00)),
            _segment(0xDA, scan_header),
            bytes(scan),
            b"\xff\xd9",
        )
    )
