"""The dataset catalog: each Spec's shape, classes, normalisation and augment; torch-free."""

import subprocess
import sys

import pytest

from pytorch_cli.data.catalog import SPECS

KNOWN = {  # name: (channels, (height, width), classes)
    "mnist": (1, (28, 28), 10), "fashion-mnist": (1, (28, 28), 10), "fake": (1, (28, 28), 10),
    "cifar10": (3, (32, 32), 10), "cifar100": (3, (32, 32), 100),
}


def test_the_catalog_holds_the_known_datasets_under_their_own_names():
    assert set(SPECS) == set(KNOWN)
    assert all(spec.name == name for name, spec in SPECS.items())


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_each_spec_is_consistent(name):
    spec = SPECS[name]
    assert (spec.channels, spec.size, spec.num_classes) == KNOWN[name]
    assert len(spec.mean) == len(spec.std) == spec.channels  # one value per channel
    assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1 for s in spec.std)
    assert spec.augment in ("none", "crop", "crop-flip")  # what --augment auto stands for
    assert spec.augment == ("crop-flip" if name.startswith("cifar") else "none")


NO_TORCH = """
import sys
sys.modules["torch"] = None  # from here on, `import torch` raises ImportError
from pytorch_cli.data import catalog
print(" ".join(catalog.SPECS))
try:
    import pytorch_cli.data.batches  # needs torch: proves torch really is unimportable
except ImportError:
    print("no torch")
"""


def test_the_catalog_imports_without_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [" ".join(SPECS), "no torch"]
