"""Reference data shipped with the service (provinces)."""

import csv
import functools
import io
from importlib import resources


@functools.cache
def load_provinces() -> dict[str, str]:
    """Return the current provinces as Kemendagri code → official name, read from provinces.csv."""
    text = resources.files(__name__).joinpath("provinces.csv").read_text(encoding="utf-8")
    return {row["code"]: row["name"] for row in csv.DictReader(io.StringIO(text))}
