#!/usr/bin/env bash
# The walkthrough on a sandbox cluster of this machine; see scripts/demo.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python scripts/demo.py "$@"
