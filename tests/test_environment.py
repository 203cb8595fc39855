"""Device identity: what names the machine a run, a fit or a gate comparison was made on."""

import os

import pytest

from harness import environment
from harness.environment import IDENTITY_KEYS, device_identity, identity_key


def test_cpu_identity_has_every_key_and_real_values():
    ident = device_identity("cpu")
    assert tuple(ident) == IDENTITY_KEYS
    assert ident["kind"] == "cpu"
    assert ident["name"] and ident["name"] != "cpu"
    assert ident["cores"] == len(os.sched_getaffinity(0))
    assert ident["threads"] >= 1
    assert ident["torch"]


def test_cpu_name_comes_from_proc_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  Gold 6338 CPU\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
    assert environment.cpu_name() == "Intel(R) Xeon(R) Gold 6338 CPU"


def test_cpu_name_falls_back_to_platform(monkeypatch):
    monkeypatch.setattr(environment, "_cpuinfo_field", lambda field: None)
    monkeypatch.setattr(environment.platform, "processor", lambda: "")
    monkeypatch.setattr(environment.platform, "machine", lambda: "aarch64")
    assert environment.cpu_name() == "aarch64"


def test_identity_key_cpu_names_model_and_cores():
    a = {"kind": "cpu", "name": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "cores": 2, "threads": 2}
    key = identity_key(a)
    assert key == "cpu-intel-xeon-gold-6338-cpu-2-00ghz-2c"
    # threads and versions are recorded but do not split environments
    assert identity_key(dict(a, threads=1, torch="9.9")) == key
    # another core count or another processor is another environment
    assert identity_key(dict(a, cores=16)) != key
    assert identity_key(dict(a, name="AMD EPYC 7763 64-Core Processor")) != key


def test_identity_key_gpu_names_the_card_only():
    h = {"kind": "cuda", "name": "NVIDIA H200", "cores": None, "threads": None, "driver": "570.1", "torch": "2.11", "cuda": "12.8"}
    assert identity_key(h) == "cuda-nvidia-h200"
    assert identity_key(dict(h, driver="580.0")) == "cuda-nvidia-h200"
    assert identity_key(dict(h, name="NVIDIA H100 80GB HBM3")) != identity_key(h)
    assert identity_key(device_identity("cpu")).startswith("cpu-")


def test_gpu_identity_without_cuda_still_answers():
    ident = device_identity("cuda:1")
    assert ident["kind"] == "cuda" and ident["cores"] is None
    assert identity_key(ident).startswith("cuda-")


@pytest.mark.parametrize("dev", ["cpu", "CPU", " cpu "])
def test_device_spelling_does_not_change_identity(dev):
    assert device_identity(dev) == device_identity("cpu")
