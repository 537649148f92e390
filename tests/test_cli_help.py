"""Help and version answer without importing torch (about 4 s here), in a fresh process."""

import subprocess
import sys

import pytest

CHECK = """
import sys
from pytorch_cli.cli import main
try:
    main({args!r})
except SystemExit as e:
    code = e.code
print("torch imported" if "torch" in sys.modules else "no torch", code)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"], ["eval", "--help"],
                                  ["resume", "--help"], ["export", "--help"], ["predict", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    out = subprocess.run([sys.executable, "-c", CHECK.format(args=args)], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] in ("no torch 0", "no torch None"), out.stdout + out.stderr
    assert ("ptrain" in out.stdout) and ("Usage" in out.stdout or "--version" in args)
