"""A wheel carries the shipped personas and the migrations (under share/persona-chatbot/, where
the code looks when it is not running from a checkout)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARE = "share/persona-chatbot"


def shipped_files() -> list[Path]:
    return sorted(
        p.relative_to(ROOT) for folder in ("personas", "migrations") for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_every_shipped_folder_is_in_the_data_files():
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    folders = {str(path.parent) for path in shipped_files()}
    assert {f"{SHARE}/{folder}" for folder in folders} <= set(data_files), "add the folder to pyproject's data-files"


def test_the_wheel_holds_every_shipped_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("persona_chatbot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if "/data/share/" in n)
    missing = [str(f) for f in shipped_files() if f"{data}/data/{SHARE}/{f}" not in names]
    assert missing == []
    assert "chatbot/engine/worker.py" in names and "chatbot/tui/chat.tcss" in names


def test_outside_a_checkout_the_code_looks_where_the_wheel_puts_them(tmp_path, monkeypatch):
    from chatbot import locations

    monkeypatch.setattr(locations, "__file__", str(tmp_path / "site-packages" / "chatbot" / "locations.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    assert locations.shipped_folder("personas") == tmp_path / "env" / SHARE / "personas"
    assert locations.shipped_folder("migrations") == tmp_path / "env" / SHARE / "migrations"
    monkeypatch.undo()
    assert locations.shipped_folder("migrations") == ROOT / "migrations"
