"""Getting a card's JSON out of its container: a JSON file, a PNG (base64 JSON in a `tEXt` chunk
named `ccv3` or `chara`; `ccv3` wins) or a CHARX (a zip holding `card.json`).

Everything here reads untrusted bytes: sizes are bounded before anything is decoded, the PNG's
chunks are walked by hand (no image is decoded), and a zip is only read, never extracted; one
whose member names would leave a folder is refused outright. Every refusal is one UserError line.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath

from chatbot.errors import NotFoundError, UserError

FILE_MAX_BYTES = 32 << 20  # a card PNG is an avatar picture: a few MB at most
JSON_MAX_BYTES = 4 << 20  # the card itself, decoded
ZIP_MEMBERS_MAX = 1_000
ZIP_TOTAL_MAX_BYTES = 256 << 20  # what the members claim to hold, uncompressed
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
CARD_CHUNKS = ("ccv3", "chara")  # in order of preference


@dataclass(frozen=True)
class RawCard:
    data: dict
    container: str  # "json" | "png" | "charx"
    original: bytes  # the file as given (kept beside the persona)
    suffix: str  # for the kept copy: ".json", ".png", ".charx"


def refuse(source: str, problem: str) -> UserError:
    return UserError(f"{source}: {problem}; nothing imported")


def read_card_file(path: Path) -> RawCard:
    try:
        with Path(path).open("rb") as f:
            raw = f.read(FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a card file") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_card_bytes(raw, str(path))


def parse_card_bytes(raw: bytes, source: str) -> RawCard:
    if len(raw) > FILE_MAX_BYTES:
        raise refuse(source, f"larger than {FILE_MAX_BYTES >> 20} MiB, not a character card")
    if raw.startswith(PNG_SIGNATURE):
        return RawCard(_json_object(_png_card_text(raw, source), source), "png", raw, ".png")
    if raw.startswith(ZIP_SIGNATURE):
        return RawCard(_json_object(_charx_card_json(raw, source), source), "charx", raw, ".charx")
    if source.lower().endswith((".png", ".apng")):
        raise refuse(source, "not a PNG file (its first bytes are not the PNG signature)")
    if source.lower().endswith(".charx"):
        raise refuse(source, "not a CHARX file (not a zip archive)")
    return RawCard(_json_object(raw, source), "json", raw, ".json")


# -- PNG ------------------------------------------------------------------------------------------


def png_text_chunks(raw: bytes, source: str, wanted: tuple[str, ...] = CARD_CHUNKS) -> dict[str, bytes]:
    """The `tEXt` chunks named in `wanted` (keyword -> text bytes), read chunk by chunk up to
    IEND. A chunk that claims more bytes than the file has, or a card chunk whose checksum is
    wrong, is refused; other chunks are skipped unread."""
    found: dict[str, bytes] = {}
    at = len(PNG_SIGNATURE)
    while True:
        if at + 8 > len(raw):
            raise refuse(source, "a damaged PNG (it ends inside a chunk header, before IEND)")
        length, kind = struct.unpack(">I4s", raw[at : at + 8])
        end = at + 8 + length + 4  # data, then the CRC
        if end > len(raw):
            raise refuse(source, f"a damaged PNG (a {kind!r} chunk claims {length:,} bytes, more than the file holds)")
        if kind == b"IEND":
            return found
        if kind == b"tEXt":
            body = raw[at + 8 : at + 8 + length]
            keyword, sep, text = body.partition(b"\0")
            name = keyword.decode("latin-1")
            if sep and name in wanted and name not in found:
                crc = struct.unpack(">I", raw[end - 4 : end])[0]
                if zlib.crc32(kind + body) != crc:
                    raise refuse(source, f"a damaged PNG (the '{name}' chunk's checksum is wrong)")
                if len(text) > JSON_MAX_BYTES * 4 // 3 + 4:
                    raise refuse(source, f"the '{name}' chunk is {len(text):,} bytes (a card is at most {JSON_MAX_BYTES >> 20} MiB)")
                found[name] = text
        at = end


def _png_card_text(raw: bytes, source: str) -> bytes:
    chunks = png_text_chunks(raw, source)
    name = next((n for n in CARD_CHUNKS if n in chunks), None)
    if name is None:
        raise refuse(source, "a PNG without a character card (no 'ccv3' or 'chara' text chunk)")
    try:
        return base64.b64decode(chunks[name], validate=True)
    except (binascii.Error, ValueError):
        raise refuse(source, f"the PNG's '{name}' chunk is not base64") from None


# -- CHARX ----------------------------------------------------------------------------------------


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not (
        "\\" in name or "\0" in name or path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")
    )


def _charx_card_json(raw: bytes, source: str) -> bytes:
    try:
        archive = zipfile.ZipFile(BytesIO(raw))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise refuse(source, "not a readable CHARX file (a damaged zip archive)") from None
    with archive:
        if len(members) > ZIP_MEMBERS_MAX:
            raise refuse(source, f"a CHARX with {len(members):,} files (at most {ZIP_MEMBERS_MAX:,})")
        bad = next((m.filename for m in members if not _safe_member(m.filename)), None)
        if bad is not None:
            raise refuse(source, f"a CHARX with a file name that leaves its folder ({bad!r})")
        if sum(m.file_size for m in members) > ZIP_TOTAL_MAX_BYTES:
            raise refuse(source, f"a CHARX that unpacks to over {ZIP_TOTAL_MAX_BYTES >> 20} MiB (a zip bomb?)")
        card = next((m for m in members if m.filename == "card.json"), None)
        if card is None:
            raise refuse(source, "a CHARX without card.json at its root")
        if card.flag_bits & 0x1:
            raise refuse(source, "an encrypted CHARX")
        if card.file_size > JSON_MAX_BYTES:
            raise refuse(source, f"its card.json is {card.file_size:,} bytes (at most {JSON_MAX_BYTES >> 20} MiB)")
        try:
            with archive.open(card) as f:
                data = f.read(JSON_MAX_BYTES + 1)  # the header may lie: never read past the limit
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error) as exc:
            raise refuse(source, f"cannot read its card.json ({type(exc).__name__})") from None
        if len(data) > JSON_MAX_BYTES:
            raise refuse(source, f"its card.json unpacks to over {JSON_MAX_BYTES >> 20} MiB (a zip bomb?)")
        return data


# -- JSON -----------------------------------------------------------------------------------------


def _json_object(data: bytes, source: str) -> dict:
    if len(data) > JSON_MAX_BYTES:
        raise refuse(source, f"a card of {len(data):,} bytes (at most {JSON_MAX_BYTES >> 20} MiB)")
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise refuse(source, "not a character card (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise refuse(source, f"not a character card (not JSON: {exc.msg} at line {exc.lineno})") from None
    except (RecursionError, ValueError) as exc:  # absurd nesting, an integer too long to convert
        raise refuse(source, f"not a usable card ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise refuse(source, "not a character card (the JSON is not an object)")
    return value
