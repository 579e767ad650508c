"""The "auto" path choice: the default, per family, among the paths this build and CPU run;
FATTN_ISA sets the initial value; set_isa/get_isa round-trip. (That every path gives the same
bits is test_isa.py's: it is why the choice can be made by speed alone.)"""
import json
import os
import subprocess
import sys

import pytest

import fattn

FAMILIES = {"prefill", "decode", "sdpa", "prefill_short", "prefill_f32"}


def fresh(env_isa=None, code="import fattn, json; bi = fattn.build_info(); "
                                 "print(json.dumps({k: bi[k] for k in ('isa', 'isa_paths', 'isa_reason')}))"):
    """build_info of a new process (the setting is process-wide; FATTN_ISA is read once)."""
    env = dict(os.environ)
    env.pop("FATTN_ISA", None)
    if env_isa is not None:
        env["FATTN_ISA"] = env_isa
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_auto_is_the_default_and_picks_a_native_path_per_family():
    info, _ = fresh()
    assert info["isa"] == "auto"
    assert set(info["isa_paths"]) == FAMILIES
    native = fattn.available_isas()
    for family, path in info["isa_paths"].items():
        assert path in native, (family, path)
        if len(native) > 1:  # a vector path exists: auto never picks the scalar model
            assert path != "scalar"
            assert f"{family} {path}" in info["isa_reason"]


@pytest.mark.parametrize("name", ["scalar", "avx2"])
def test_environment_sets_the_initial_path(name):
    if name not in fattn.available_isas():
        pytest.skip(f"{name} is not available here")
    info, _ = fresh(name)
    assert info["isa"] == name
    assert set(info["isa_paths"].values()) == {name}
    assert f"FATTN_ISA={name}" in info["isa_reason"]


def test_environment_value_that_cannot_run_is_ignored_with_a_warning():
    info, err = fresh("neon")
    assert info["isa"] == "auto"
    assert "FATTN_ISA='neon' ignored" in info["isa_reason"]
    assert "RuntimeWarning" in err and "FATTN_ISA='neon' ignored" in err
    info, _ = fresh("auto")
    assert info["isa"] == "auto" and "FATTN_ISA=auto" in info["isa_reason"]


def test_set_and_get_round_trip(restore_isa):
    for name in fattn.available_isas(include_emulated=True) + ["auto"]:
        fattn.set_isa(name)
        assert fattn.get_isa() == name == fattn.build_info()["isa"]
    fattn.set_isa("scalar")
    assert set(fattn.build_info()["isa_paths"].values()) == {"scalar"}
    fattn.set_isa("auto")
    assert "set_isa('auto')" in fattn.build_info()["isa_reason"]
    with pytest.raises(ValueError, match="isa: must be"):
        fattn.set_isa("fastest")
    with pytest.raises(TypeError, match="name: expected a str"):
        fattn.set_isa(None)
