"""Links pytest and hypothesis of this interpreter's site-packages, with
their dependencies, into a directory for other interpreters' PYTHONPATH.

    python3 link_pytest.py DIR

run-tests.sh runs it with the system python3, whose distribution packages
(Debian's python3-pytest, python3-hypothesis, ...) are pure Python: other
Python 3.9+ interpreters on the machine, which have no pytest of their own
and cannot download one, import the same files through symbolic links in
DIR (a throwaway directory). The distributions' metadata directories are
linked too, since pytest finds plugins (hypothesis's) through entry points.
It refuses a package that holds compiled extensions, which only the
interpreter they were built for can load, and prints what it linked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys

# Distribution name -> its top-level modules. pytest 7 needs exceptiongroup
# and tomli on Python < 3.11 (Debian's python3-exceptiongroup and
# python3-tomli, which .ci/run installs); hypothesis is optional.
DISTRIBUTIONS = {
    "pytest": ["pytest", "_pytest"],
    "pluggy": ["pluggy"],
    "iniconfig": ["iniconfig"],
    "packaging": ["packaging"],
    "attrs": ["attr", "attrs"],
    "exceptiongroup": ["exceptiongroup"],
    "tomli": ["tomli"],
    "hypothesis": ["hypothesis", "_hypothesis_pytestplugin", "_hypothesis_ftz_detector"],
    "sortedcontainers": ["sortedcontainers"],
}
REQUIRED = {"pytest", "pluggy", "iniconfig", "packaging", "attrs", "exceptiongroup", "tomli"}


def _compiled(path: str) -> bool:
    if os.path.isfile(path):
        return not path.endswith(".py")
    for _, _, files in os.walk(path):
        if any(f.endswith((".so", ".pyd")) for f in files):
            return True
    return False


def main() -> int:
    out = sys.argv[1]
    missing = []
    linked = []
    for dist_name, modules in DISTRIBUTIONS.items():
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        meta = getattr(dist, "_path", None)
        if meta is not None:
            os.symlink(str(meta), os.path.join(out, os.path.basename(str(meta))))
        for name in modules:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            file = getattr(mod, "__file__", None)
            if not file:
                continue
            path = os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
            if _compiled(path):
                print("link_pytest.py: %s (%s) holds compiled extensions; not linked" % (name, path), file=sys.stderr)
                missing.append(dist_name)
                break
            os.symlink(path, os.path.join(out, os.path.basename(path)))
        if dist_name == "pytest":
            # pytest 7.2 and later ship py.py, a stand-in for the old pylib
            # that _pytest imports (an installed pylib would shadow it).
            shim = str(dist.locate_file("py.py"))
            if os.path.isfile(shim):
                os.symlink(shim, os.path.join(out, "py.py"))
        linked.append("%s %s" % (dist_name, dist.version))
    print(", ".join(linked))
    lacking = sorted(set(missing) & REQUIRED)
    if lacking:
        print("link_pytest.py: %s not installed for %s" % (", ".join(lacking), sys.executable), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
