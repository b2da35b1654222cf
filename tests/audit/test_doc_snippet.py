"""The standalone verifier printed in docs/audit.md, run exactly as written against real exports."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.config import Settings
from tests.audit.conftest import EVENTS, AuditLog, build_log, remove_events, rewind_head, tampering
from tests.conftest import TokenFactory, bearer

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (code,) = [str(block) for block in blocks if block.startswith('"""verify_export.py')]
    return code


@pytest.fixture
def verifier(tmp_path: Path) -> Path:
    path = tmp_path / "verify_export.py"
    path.write_text(snippet(), encoding="utf-8")
    return path


def export_to(client: TestClient, log: AuditLog, path: Path) -> list[dict[str, object]]:
    response = client.get("/v1/audit/export", headers=bearer(log.auditor))
    assert response.status_code == 200
    path.write_bytes(response.content)
    return [json.loads(line) for line in response.text.splitlines()]


def run(verifier: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I -S: no site-packages, no environment, so the snippet can only use the standard library.
    return subprocess.run([sys.executable, "-I", "-S", str(verifier), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_snippet_is_short_and_uses_only_the_standard_library() -> None:
    code = snippet()
    assert len(code.splitlines()) <= 25
    imports = set(re.findall(r"^import (\w+)", code, flags=re.MULTILINE))
    assert imports == {"hashlib", "json", "sys"}


def test_an_intact_export_passes(
    client: TestClient, issue_token: TokenFactory, verifier: Path, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    # Non-ASCII in the log (headers arrive as bytes, read as Latin-1), so ensure_ascii=False matters.
    purpose = "pemeriksaan — ñ, 漢字".encode()
    client.get("/v1/agencies", headers={"Authorization": f"Bearer {log.reader}", "X-Purpose": purpose})
    events = export_to(client, log, tmp_path / "audit.ndjson")
    assert any(not str(e["purpose"] or "").isascii() for e in events)
    result = run(verifier, str(tmp_path / "audit.ndjson"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {len(events)} events, head hash {events[-1]['hash']}\n"


def test_a_tampered_database_gives_an_export_that_fails_at_the_seq(
    client: TestClient, issue_token: TokenFactory, verifier: Path, tmp_path: Path, settings: Settings
) -> None:
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == 6).values(status_code=204))
    export_to(client, log, tmp_path / "audit.ndjson")
    result = run(verifier, str(tmp_path / "audit.ndjson"))
    assert result.returncode != 0
    assert result.stderr.strip() == "first bad seq: 6"


@pytest.mark.parametrize(("edit", "first_bad"), [
    ("change", 4), ("drop", 4), ("swap", 3), ("cut_start", 1),
])
def test_an_export_edited_after_the_fact_fails_at_the_seq(
    client: TestClient, issue_token: TokenFactory, verifier: Path, tmp_path: Path, edit: str, first_bad: int
) -> None:
    log = build_log(client, issue_token)
    path = tmp_path / "audit.ndjson"
    export_to(client, log, path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if edit == "change":
        event = json.loads(lines[3])
        event["actor"]["agency"] = "KASN"
        lines[3] = json.dumps(event, ensure_ascii=False) + "\n"
    elif edit == "drop":
        del lines[3]
    elif edit == "swap":
        lines[2], lines[5] = lines[5], lines[2]
    else:
        del lines[0]
    path.write_text("".join(lines), encoding="utf-8")
    result = run(verifier, str(path))
    assert result.returncode != 0
    assert result.stderr.strip() == f"first bad seq: {first_bad}"


def test_with_a_checkpoint_the_snippet_proves_a_cut_and_accepts_an_intact_log(
    client: TestClient, issue_token: TokenFactory, verifier: Path, tmp_path: Path, settings: Settings
) -> None:
    log = build_log(client, issue_token)
    compact = client.get("/v1/audit/checkpoint", headers=bearer(log.auditor)).json()["jws"]
    segment = compact.split(".")[1]
    statement = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    seq, hash_ = str(statement["seq"]), statement["hash"]
    export_to(client, log, tmp_path / "intact.ndjson")
    assert run(verifier, str(tmp_path / "intact.ndjson"), seq, hash_).returncode == 0

    with tampering(settings.database_url) as conn:
        remove_events(conn, list(range(8, 13)))  # the checkpoint states seq 10
        rewind_head(conn, 7)
    export_to(client, log, tmp_path / "cut.ndjson")
    assert run(verifier, str(tmp_path / "cut.ndjson")).returncode == 0  # consistent on its own...
    result = run(verifier, str(tmp_path / "cut.ndjson"), seq, hash_)
    assert result.returncode != 0  # ...but shorter than the checkpoint
    assert result.stderr.strip() == "first bad seq: 8"
