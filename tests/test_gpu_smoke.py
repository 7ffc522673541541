"""The GPU check's sanitizer case runs (here under the interpreter) and passes."""

import subprocess
import sys


def test_gpu_smoke_script_passes():
    r = subprocess.run([sys.executable, "-m", "bench.gpu_smoke"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "gpu_smoke: ok" in r.stdout
