#!/usr/bin/env bash
# Set everything up and run the whole test suite (the README's test command; .ci/run runs it).
#
# Creates .venv, installs deepsky with its test extras, and -- when running as root on a
# Debian-like system without it -- installs Debian's chromium, which the report test renders
# the HTML report in (that test is skipped with a reason when no chromium can be had).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the report test ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "chromium could not be installed: the browser test will be skipped"
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
