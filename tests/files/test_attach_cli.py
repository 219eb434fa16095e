"""``edge-agent attach``: stored durably, recognised when attached again, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from subprocess import run

from tests.files.kit import UNIT, sha256


def attach(*args: str) -> tuple[int, str, str]:
    proc = run(
        [sys.executable, "-m", "edge_agent", "attach", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_attach_stores_once_and_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "unit.toml"
    config.write_text(f'[unit]\nid = "{UNIT}"\n[store]\npath = "{tmp_path / "unit.db"}"\n')
    ecg = tmp_path / "Dupont_Marie_ecg.pdf"  # a name may carry the patient's: never echoed
    ecg.write_bytes(b"%PDF-1.4\n12 leads")
    code, out, err = attach(str(ecg), "--kind", "ecg", "--config", str(config))
    assert code == 0, err
    assert out.startswith(f"stored: 17 bytes, id {sha256(ecg.read_bytes())[:12]}")
    assert "the agent is not running" in out and "Dupont" not in out + err
    code, out, _ = attach(str(ecg), "--config", str(config))
    assert code == 0 and out.startswith("already held")
    listing = run(
        [sys.executable, "-m", "edge_agent", "files", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0
    assert "ecg" in listing.stdout and "waiting" in listing.stdout
    code, _, err = attach(str(tmp_path / "missing.pdf"), "--config", str(config))
    assert code == 2 and err.count("\n") == 1 and "Fix:" in err
    code, _, err = attach(str(ecg), "--kind", "xray", "--config", str(config))
    assert code == 2 and err.count("\n") == 1
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    code, _, err = attach(str(fake), "--config", str(config))
    assert code == 1 and "not a readable DICOM file" in err and "Traceback" not in err
