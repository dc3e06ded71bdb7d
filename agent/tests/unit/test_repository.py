"""The repository's own files: no merge left half-resolved."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_file_holds_merge_conflict_markers():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    conflicted = []
    for name in tracked.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and MARKER.search(path.read_bytes()):
            conflicted.append(name)
    assert conflicted == []
