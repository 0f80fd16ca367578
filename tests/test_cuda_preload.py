"""dpn_mxnet/cuda_preload.py finds the CUDA libraries of the nvidia-*-cu11 wheels by their layout and loads them."""
import _ctypes
import json
import shutil
import subprocess
import sys

from conftest import REPO

LOADED = ("import json, dpn_mxnet.cuda_preload; "
          "print(json.dumps(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'nvidia' in l})))")


def test_libraries_in_the_wheel_layout_are_loaded(tmp_path):
    # stand-ins with the wheels' paths and names: any loadable shared object will do
    for path in ("nvidia/cuda_runtime/lib/libcudart.so.11.0", "nvidia/cudnn/lib/libcudnn.so.8",
                 "nvidia/cudnn/lib/libcudnn_ops_infer.so.8", "nvidia/nvtx/lib/libnvToolsExt.so.1"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_ctypes.__file__, tmp_path / path)
    (tmp_path / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9").write_bytes(b"not loaded: cuDNN 8 only")
    done = subprocess.run([sys.executable, "-c", LOADED], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    loaded = [path.replace(str(tmp_path), "") for path in json.loads(done.stdout)]
    assert loaded == ["/nvidia/cuda_runtime/lib/libcudart.so.11.0", "/nvidia/cudnn/lib/libcudnn.so.8",
                      "/nvidia/cudnn/lib/libcudnn_ops_infer.so.8", "/nvidia/nvtx/lib/libnvToolsExt.so.1"]


def test_nothing_happens_without_the_wheels():
    done = subprocess.run([sys.executable, "-c", LOADED], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]"
