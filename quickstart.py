#!/usr/bin/env python3
"""CryoFlex quick start, for a fresh machine with Python 3.11+ and PyPI.

    python3 quickstart.py demo     # end-to-end demo in a scripted Scipion project
    python3 quickstart.py test     # the whole test suite (extra arguments go to pytest)

The first use creates ``.venv/`` next to this file with CryoFlex installed in
editable mode (torch 2.13.0 when pip can get it, otherwise any torch), and
reuses it afterwards.  Inside an existing Scipion, use ``scipion3 pip install
-e .`` and ``scipion3 python -m cryoflex_scipion.demo`` instead.
"""
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")


def _python():
    sub = "Scripts" if os.name == "nt" else "bin"
    return os.path.join(VENV, sub, "python")


def _fingerprint():
    with open(os.path.join(HERE, "setup.py"), "rb") as fh:
        return hashlib.sha256(fh.read() + sys.version.encode()).hexdigest()


def _pip(*args):
    return subprocess.call([_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"] + list(args))


def ensure_environment():
    stamp = os.path.join(VENV, ".cryoflex-installed")
    if os.path.exists(stamp) and open(stamp).read() == _fingerprint():
        return
    if sys.version_info < (3, 11):
        sys.exit("CryoFlex needs Python 3.11 or newer; this is %s" % sys.version.split()[0])
    if not os.path.exists(_python()):
        print("creating %s ..." % VENV, flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    print("installing torch (2.13.0, or any available build) ...", flush=True)
    if _pip("torch==2.13.0") != 0 and _pip("torch") != 0:
        sys.exit("could not install torch with pip")
    print("installing CryoFlex and its dependencies (editable) ...", flush=True)
    if _pip("-e", HERE + "[test]") != 0:
        sys.exit("pip could not install CryoFlex")
    with open(stamp, "w") as fh:
        fh.write(_fingerprint())


def main(argv):
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    if argv[0] == "demo":
        cmd = [_python(), "-m", "cryoflex_scipion.demo"] + argv[1:]
    else:
        cmd = [_python(), "-m", "pytest", "-q"] + argv[1:]
    return subprocess.call(cmd, cwd=HERE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
