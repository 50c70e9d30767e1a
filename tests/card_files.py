"""Character cards the suite writes itself, in each container (JSON, PNG by hand, CHARX)."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zipfile
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Shaped like cards on character sites: markdown-ish description, asterisk actions, several
# example dialogues, alternate greetings, and a lorebook with primary/secondary/constant entries.
REAL_WORLD_V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Captain Mara Voss",
        "description": (
            "{{char}} is the weathered captain of the airship *Kestrel*. Tall, scarred, with a mechanical left arm.\n"
            "She speaks in clipped sentences and calls {{user}} 'deckhand'."
        ),
        "personality": "gruff, loyal, secretly sentimental",
        "scenario": "{{user}} has just signed on as the newest member of the Kestrel's crew.",
        "first_mes": "*{{char}} looks {{user}} up and down.* \"You're the new deckhand? Stow your gear. We lift at dawn.\"",
        "mes_example": (
            "<START>\n{{user}}: Where are we headed?\n{{char}}: *taps the map* Port Hallow. Don't ask why.\n"
            "<START>\n{{user}}: What happened to your arm?\n{{char}}: Storm over the Ashen Reach. Lost the arm, kept the ship.\n"
            "<START>\n{{user}}: Can I steer?\n{{char}}: *laughs* Not in this lifetime, deckhand."
        ),
        "creator_notes": "Airship adventure. Works best with short replies.",
        "system_prompt": "",
        "post_history_instructions": "Stay in character as {{char}}; answer in at most three sentences.",
        "alternate_greetings": [
            "*The deck lurches.* \"Hold on to something, deckhand!\"",
            "*{{char}} hands {{user}} a wrench.* \"Engine room. Now.\"",
        ],
        "tags": ["adventure", "steampunk"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "", "depth": 4}},
        "character_book": {
            "name": "Kestrel lore",
            "scan_depth": 4,
            "token_budget": 120,
            "recursive_scanning": False,
            "extensions": {},
            "entries": [
                {"keys": ["Kestrel", "airship"], "content": "The Kestrel is a three-masted airship with a brass hull.",
                 "extensions": {}, "enabled": True, "insertion_order": 10, "id": 1},
                {"keys": ["Ashen Reach"], "content": "The Ashen Reach is a storm belt where ships vanish.",
                 "extensions": {}, "enabled": True, "insertion_order": 20, "id": 2},
                {"keys": ["Hallow"], "secondary_keys": ["smuggl"], "selective": True,
                 "content": "Port Hallow is a smugglers' haven run by {{char}}'s old rival.",
                 "extensions": {}, "enabled": True, "insertion_order": 30, "id": 3},
                {"keys": [], "constant": True, "content": "The year is 1887 and airships rule the sky.",
                 "extensions": {}, "enabled": True, "insertion_order": 0, "id": 4},
                {"keys": ["mutiny"], "content": "A disabled entry.", "extensions": {}, "enabled": False,
                 "insertion_order": 40, "id": 5},
            ],
        },
    },
}


def v3(card: dict = REAL_WORLD_V2, **changes) -> dict:
    out = copy.deepcopy(card)
    out["spec"], out["spec_version"] = "chara_card_v3", "3.0"
    out["data"].update({"group_only_greetings": [], "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]})
    out["data"].update(changes)
    return out


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def text_chunk(keyword: str, value: bytes) -> bytes:
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + value)


def b64(card: dict) -> bytes:
    return base64.b64encode(json.dumps(card).encode("utf-8"))


def png(*extra_chunks: bytes) -> bytes:
    """A real 1x1 greyscale PNG, with the given chunks after IHDR."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return PNG_SIGNATURE + ihdr + b"".join(extra_chunks) + idat + chunk(b"IEND", b"")


def card_png(card: dict, keyword: str = "chara") -> bytes:
    return png(text_chunk(keyword, b64(card)))


def charx(card: dict | bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", card if isinstance(card, bytes) else json.dumps(card))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()
