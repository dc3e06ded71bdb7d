#!/usr/bin/env python3
"""Prints the test image's name and the path of its `docker save` archive, building the archive if needed.

The sandbox playbook loads this archive into its nodes; the tests' harness builds it (agent/tests/harness/image.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "tests"))

from harness.image import busybox_image  # noqa: E402

if __name__ == "__main__":
    image, archive = busybox_image()
    print(image, archive)
