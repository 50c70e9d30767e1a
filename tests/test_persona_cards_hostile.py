"""Hostile character cards: each refused with one line (exit 1), nothing written, before any
model or tokenizer loads."""

from __future__ import annotations

import copy
import io
import json
import struct
import zipfile

import pytest
from card_files import PNG_SIGNATURE, REAL_WORLD_V2, b64, card_png, charx, chunk, png, text_chunk
from test_persona_support import run_cli


def with_data(**changes) -> dict:
    card = copy.deepcopy(REAL_WORLD_V2)
    card["data"].update(changes)
    return card


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def with_declared_size(archive: bytes, member: int, size: int) -> bytes:
    """The zip with one member's uncompressed size in the central directory changed (what a
    reader trusts before unpacking)."""
    at = -1
    for _ in range(member + 1):
        at = archive.index(b"PK\x01\x02", at + 1)
    return archive[: at + 24] + struct.pack("<I", size) + archive[at + 28 :]


def zip_bomb() -> bytes:
    """card.json fine, beside it a member that claims to unpack to 4 GiB."""
    archive = zip_of({"card.json": json.dumps(REAL_WORLD_V2).encode(), "assets/other/other/bomb.bin": bytes(1 << 20)})
    return with_declared_size(archive, 1, 0xFFFFFFF0)


def lying_card_json() -> bytes:
    """card.json that claims 100 bytes and unpacks to 5 MiB."""
    return with_declared_size(zip_of({"card.json": b" " * (5 << 20) + b"{}"}), 0, 100)


valid_png = card_png(REAL_WORLD_V2)
HOSTILE = {
    "not-a-png": ("x.png", b"GIF89a" + bytes(20), "not a PNG file"),
    "png-without-card": ("x.png", png(), "no 'ccv3' or 'chara' text chunk"),
    "truncated-png": ("x.png", valid_png[: len(valid_png) // 2], "damaged PNG"),
    "chunk-longer-than-file": ("x.png", PNG_SIGNATURE + struct.pack(">I4s", 0x7FFFFFFF, b"tEXt") + b"chara\0", "claims 2,147,483,647 bytes"),
    "bad-crc": ("x.png", png(chunk(b"tEXt", b"chara\0" + b64(REAL_WORLD_V2), crc=0)), "checksum is wrong"),
    "huge-chunk": ("x.png", png(text_chunk("chara", b"A" * (6 << 20))), "the 'chara' chunk is"),
    "base64-not-base64": ("x.png", png(text_chunk("chara", b"not base64 !!")), "is not base64"),
    "base64-not-json": ("x.png", png(text_chunk("chara", b"aGVsbG8gd29ybGQ=")), "not JSON"),
    "json-not-object": ("x.json", b"[1, 2]", "not an object"),
    "not-utf8": ("x.json", b"\xff\xfe{", "not UTF-8"),
    "v1-card": ("x.json", json.dumps(REAL_WORLD_V2["data"]).encode(), "not a V2 or V3 character card"),
    "deep-nesting": ("x.json", b"[" * 100_000 + b"]" * 100_000, "not a usable card"),
    "absurd-description": ("x.json", json.dumps(with_data(description="x" * 300_000)).encode(), "field 'data.description'"),
    "absurd-greetings": ("x.json", json.dumps(with_data(alternate_greetings=["hi"] * 5000)).encode(), "field 'data.alternate_greetings'"),
    "lone-surrogate": ("x.json", json.dumps(with_data(name="\ud800")).encode(), "field 'data.name'"),
    "empty-name": ("x.json", json.dumps(with_data(name="")).encode(), "field 'data.name'"),
    "charx-path-traversal": ("x.charx", zip_of({"card.json": json.dumps(REAL_WORLD_V2).encode(), "../../evil.sh": b"rm -rf"}), "leaves its folder"),
    "charx-absolute-path": ("x.charx", zip_of({"card.json": b"{}", "/etc/cron.d/x": b"x"}), "leaves its folder"),
    "charx-without-card": ("x.charx", zip_of({"other.json": b"{}"}), "without card.json"),
    "charx-huge-card-json": ("x.charx", charx(b" " * (5 << 20) + b"{}"), "its card.json is"),
    "charx-damaged": ("x.charx", charx(REAL_WORLD_V2)[:60], "damaged zip"),
    "charx-zip-bomb": ("x.charx", zip_bomb(), "zip bomb"),
    "charx-lying-card-json": ("x.charx", lying_card_json(), "cannot read its card.json"),
    "not-a-charx": ("x.charx", b"plain text", "not a CHARX file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_card_is_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_MODEL", str(tmp_path / "no-model"))  # a refusal must not need one
    name, content, expected = HOSTILE[case]
    path = tmp_path / name
    path.write_bytes(content)
    assert run_cli(["persona", "import", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chatbot: error: ") and err.count("\n") == 1, err
    assert expected in err and "nothing imported" in err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*"))


def test_a_hostile_card_with_a_name_given_is_refused_before_anything_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_MODEL", str(tmp_path / "no-model"))
    path = tmp_path / "x.png"
    path.write_bytes(b"not a png")
    assert run_cli(["persona", "import", str(path), "--name", "x"]) == 1
    assert "not a PNG file" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_missing_card_file_is_not_found(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    assert run_cli(["persona", "import", str(tmp_path / "nope.png")]) == 1
    assert "no such file" in capsys.readouterr().err
