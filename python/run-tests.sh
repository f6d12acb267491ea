#!/usr/bin/env bash
# The Python package's tests, run by the repository's test.sh.
#
# 1. pytest, in a throwaway virtual environment made from the system python3
#    with --system-site-packages (so the distribution's pytest, hypothesis
#    and cryptography are visible), the package installed from this folder
#    with pip --no-index --no-build-isolation: nothing is downloaded.
# 2. mypy --strict on src/ against Python 3.9's standard library (Debian's
#    mypy; .ci/run installs it), so that the package's "Typing :: Typed"
#    and py.typed hold.
# 3. Every other Python 3.9 or later found in PATH or in the pyenv versions
#    folder runs the same tests with pytest too: PyPI is out of reach, so
#    they import the system python3's pytest, hypothesis and their
#    dependencies, all pure Python, through a throwaway directory of
#    symbolic links on PYTHONPATH (tests/link_pytest.py), and the package
#    from src/. Tests that need the 'cryptography' package skip, saying so,
#    where an interpreter lacks it: those interpreters test ModeAuth without
#    forward secrecy, the vectors of that handshake, keys and key files, the
#    Listener and asyncio. An interpreter on which that pytest does not
#    import runs the tests with the standard library's unittest instead,
#    and the output says why.
# Interop with the Go package runs in `go test` (python_interop_test.go).
set -euo pipefail
cd "$(dirname "$0")"

system_python=${HMACAUTH_TEST_PYTHON:-$(command -v /usr/bin/python3 || command -v python3 || true)}
if [ -z "$system_python" ]; then
	echo "python/run-tests.sh: no python3: the Python tests did not run" >&2
	exit 0
fi

venv=$(mktemp -d)
links=$(mktemp -d)
trap 'rm -rf "$venv" "$links" build src/*.egg-info' EXIT
echo "+ $system_python -m venv --system-site-packages (temporary) && pip install --no-index --no-build-isolation ./python"
"$system_python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --no-index --no-build-isolation --disable-pip-version-check .
echo "+ pytest python/tests ($("$venv/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'))"
status=0
(cd tests && "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider .) || status=$?
# 5: no tests were collected, which is not a failure of the package.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
	exit "$status"
fi

if command -v mypy >/dev/null 2>&1; then
	# Checked against Python 3.9's standard library, the oldest the package
	# supports; the venv's interpreter gives it cryptography's type hints.
	echo "+ mypy --strict --python-version 3.9 python/src ($(mypy --version))"
	MYPY_CACHE_DIR="$venv/mypy-cache" mypy --strict --python-version 3.9 --python-executable "$venv/bin/python" src
else
	echo "python/run-tests.sh: mypy is not installed (apt-get install mypy, as .ci/run does): the type check did not run" >&2
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
# pytest 7.2 predates Python 3.12: its assertion rewriting uses ast.Str (a
# DeprecationWarning from 3.12, removed in 3.14) and its unittest support
# lacks addDuration (a RuntimeWarning from 3.12). Both are pytest's, not the
# package's, and would drown the output; they are ignored by name.
pytest_compat=(-W "ignore::DeprecationWarning:_pytest.assertion.rewrite" -W "ignore:TestResult has no addDuration method:RuntimeWarning")
linked=
for py in "${candidates[@]}"; do
	info=$("$py" -I -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version_info >= (3, 9), "%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
	read -r real ok version <<<"$info"
	if [ "$ok" != True ] || [ -n "${seen[$real]:-}" ]; then
		continue
	fi
	seen[$real]=1
	if [ -z "$linked" ]; then
		echo "+ $system_python python/tests/link_pytest.py (temporary): $("$system_python" tests/link_pytest.py "$links")"
		linked=1
	fi
	crypto=$(PYTHONPATH= "$py" -c 'import cryptography; print("cryptography", cryptography.__version__)' 2>/dev/null) ||
		crypto="no 'cryptography' package: the tests that need it skip"
	why=$(cd tests && PYTHONPATH="$links" PYTHONDONTWRITEBYTECODE=1 "$py" -c 'import pytest' 2>&1 | tail -n 1) || true
	if [ -z "$why" ]; then
		echo "+ python $version -m pytest python/tests ($py; $crypto)"
		(cd tests && PYTHONPATH="$links:../src" PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -rs -p no:cacheprovider "${pytest_compat[@]}" .)
	else
		echo "+ python $version -m unittest discover python/tests ($py; $crypto): the system's pytest does not import on Python $version: $why"
		(cd tests && PYTHONPATH=../src PYTHONDONTWRITEBYTECODE=1 "$py" -m unittest discover -q -s . -p 'test_*.py')
	fi
done
