#!/usr/bin/env bash
# The Python package's tests, run by the repository's test.sh.
#
# 1. pytest, in a throwaway virtual environment made from the system python3
#    with --system-site-packages (so the distribution's pytest, hypothesis
#    and cryptography are visible), the package installed from this folder
#    with pip --no-index --no-build-isolation: nothing is downloaded.
# 2. Every other Python 3.9 or later found in PATH or in the pyenv versions
#    folder runs the same tests with the standard library's unittest (they
#    lack pytest), the package from src/. Tests that need the
#    'cryptography' package skip where it is missing, so those interpreters
#    test ModeAuth without forward secrecy, the vectors of that handshake,
#    keys and key files, the Listener and asyncio.
# Interop with the Go package runs in `go test` (python_interop_test.go).
set -euo pipefail
cd "$(dirname "$0")"

system_python=${HMACAUTH_TEST_PYTHON:-$(command -v /usr/bin/python3 python3 | head -n 1)}
if [ -z "$system_python" ]; then
	echo "python/run-tests.sh: no python3: the Python tests did not run" >&2
	exit 0
fi

venv=$(mktemp -d)
trap 'rm -rf "$venv" build src/*.egg-info' EXIT
echo "+ $system_python -m venv --system-site-packages (temporary) && pip install --no-index --no-build-isolation ./python"
"$system_python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --no-index --no-build-isolation --disable-pip-version-check .
echo "+ pytest python/tests ($("$venv/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'))"
status=0
(cd tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider .) || status=$?
# 5: no tests were collected, which is not a failure of the package.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
	exit "$status"
fi

system_real=$("$system_python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
declare -A seen=(["$system_real"]=1)
candidates=()
IFS=: read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
	[ -n "$dir" ] && [ -x "$dir/python3" ] && candidates+=("$dir/python3")
done
for root in "${PYENV_ROOT:-}" "${HOME:+$HOME/.pyenv}"; do
	if [ -n "$root" ] && [ -d "$root/versions" ]; then
		for p in "$root"/versions/*/bin/python3; do
			[ -x "$p" ] && candidates+=("$p")
		done
	fi
done
for py in "${candidates[@]}"; do
	info=$("$py" -I -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version_info >= (3, 9), "%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
	read -r real ok version <<<"$info"
	if [ "$ok" != True ] || [ -n "${seen[$real]:-}" ]; then
		continue
	fi
	seen[$real]=1
	echo "+ python $version -m unittest discover python/tests ($py)"
	(cd tests && PYTHONPATH=../src PYTHONDONTWRITEBYTECODE=1 "$py" -m unittest discover -q -s . -p 'test_*.py')
done
