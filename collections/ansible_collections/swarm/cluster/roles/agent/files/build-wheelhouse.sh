#!/usr/bin/env bash
# Builds the agent's wheelhouse on the controller, for hosts that install it with no package index:
#   build-wheelhouse.sh PYTHON SOURCE WHEELHOUSE      prints the path of the archive hosts get
# WHEELHOUSE/deps holds the dependencies' wheels, rebuilt only when SOURCE/pyproject.toml changes;
# WHEELHOUSE/agent holds the agent's own wheel, rebuilt every time. Both go into one archive, WHEELHOUSE/wheels.tar,
# byte for byte the same from the same source (SOURCE_DATE_EPOCH fixes the timestamps inside the wheel, tar's
# options those of the archive), so hosts see a change only when there is one, and copy one file, not dozens.
set -euo pipefail
python=$1 source=$2 wheelhouse=$3

mkdir -p "$wheelhouse"
cd "$wheelhouse"
stamp="$(sha256sum "$source/pyproject.toml" | cut -d' ' -f1)"
if [[ "$(cat deps/.pyproject.sha256 2>/dev/null)" != "$stamp" ]]; then
  rm -rf deps.new
  "$python" -m pip wheel --quiet --disable-pip-version-check -w deps.new "$source"
  rm -f deps.new/swarm_agent-*.whl
  echo "$stamp" > deps.new/.pyproject.sha256
  rm -rf deps && mv deps.new deps
fi
rm -rf agent.new
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w agent.new "$source"
rm -rf agent && mv agent.new agent
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf wheels.tar.new deps agent
mv wheels.tar.new wheels.tar
echo "$wheelhouse/wheels.tar"
