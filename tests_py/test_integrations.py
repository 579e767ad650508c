"""fattn.integrations imports torch and transformers only when asked: `import fattn` (and
`import fattn.integrations`, `import fattn.integrations.transformers`) never does, with or without
them installed. Runs in `make test` (no torch needed)."""
import importlib.util
import subprocess
import sys

import pytest


def imported_after(code):
    """The heavy modules in sys.modules after running `code` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(sorted(m for m in ('torch', 'transformers', 'ml_dtypes') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def test_import_fattn_imports_neither_torch_nor_transformers():
    assert imported_after("import fattn, fattn.integrations, fattn.integrations.transformers") == "['ml_dtypes']"


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_the_torch_integration_says_torch_is_missing():
    with pytest.raises(ModuleNotFoundError, match="torch"):
        importlib.import_module("fattn.integrations.torch")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_the_distributed_integration_says_torch_is_missing():
    with pytest.raises(ModuleNotFoundError, match="fattn.integrations.distributed needs PyTorch"):
        importlib.import_module("fattn.integrations.distributed")


def test_the_ring_schedule_and_its_bound_need_no_torch():
    assert imported_after("import fattn, fattn._ring, fattn.bounds; fattn.bounds.ring_bound") == "['ml_dtypes']"


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_register_says_transformers_is_missing():
    import fattn.integrations.transformers as fattn_tf
    with pytest.raises(ModuleNotFoundError, match="torch|transformers"):
        fattn_tf.register()
