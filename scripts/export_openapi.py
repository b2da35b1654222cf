"""Regenerate openapi/openapi.json from the app (`make openapi`); a test fails when the two differ."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = ROOT / "openapi" / "openapi.json"


def render() -> str:
    from app.auth.keys import generate_key_file
    from app.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key.pem"
        generate_key_file(key)
        settings = Settings(database_url=f"sqlite:///{tmp}/openapi.db", signing_key_file=key, env="test")
        schema = create_app(settings).openapi()
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
