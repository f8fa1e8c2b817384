"""ISO 15765-2 (ISO-TP) segmentation of diagnostic messages into 8-byte CAN frames."""

from __future__ import annotations

from typing import Final

PADDING: Final = 0x55
"""Filler for unused bytes of a frame (ISO 15765-4 requires full 8-byte frames)."""
SINGLE_FRAME_MAX: Final = 7
FIRST_FRAME_DATA: Final = 6
CONSECUTIVE_DATA: Final = 7
MAX_LENGTH: Final = 4095


def segment(payload: bytes, padding: int = PADDING) -> list[bytes]:
    """Split a payload into a single frame, or a first frame and consecutive frames."""
    if not payload or len(payload) > MAX_LENGTH:
        raise ValueError(f"ISO-TP payload of {len(payload)} bytes (1..{MAX_LENGTH})")
    if len(payload) <= SINGLE_FRAME_MAX:
        return [_pad(bytes([len(payload)]) + payload, padding)]
    n = len(payload)
    frames = [bytes([0x10 | (n >> 8), n & 0xFF]) + payload[:FIRST_FRAME_DATA]]
    rest = payload[FIRST_FRAME_DATA:]
    index = 1
    while rest:
        frames.append(_pad(bytes([0x20 | (index & 0x0F)]) + rest[:CONSECUTIVE_DATA], padding))
        rest = rest[CONSECUTIVE_DATA:]
        index += 1
    return frames


def single_frame_payload(data: bytes) -> bytes | None:
    """The payload of a single frame, or None when `data` is not a valid single frame."""
    if not data or data[0] >> 4 != 0:
        return None
    length = data[0] & 0x0F
    if length == 0 or length > min(SINGLE_FRAME_MAX, len(data) - 1):
        return None
    return bytes(data[1:1 + length])


def _pad(frame: bytes, padding: int) -> bytes:
    return frame + bytes([padding]) * (8 - len(frame))
