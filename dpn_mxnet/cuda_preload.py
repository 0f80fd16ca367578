"""Load the CUDA 11 libraries of the nvidia-*-cu11 wheels so that mxnet-cu112 finds them.

mxnet-cu112 links libcudart.so.11.0, libcublas.so.11, libcudnn.so.8, libnccl.so.2 and friends but ships none of
them. ``make setup`` on a GPU machine installs them from PyPI (requirements-cuda11.txt) and writes a .pth file
that imports this module at interpreter start: loading each library by path with RTLD_GLOBAL lets the dynamic
loader resolve libmxnet.so's dependencies later without LD_LIBRARY_PATH. Does nothing where the wheels are absent.
"""
import ctypes
import glob
import importlib.util
import os

# dependency order: the runtime first, cuDNN's sub-libraries after the core library
LIBRARIES = [
    "cuda_runtime/lib/libcudart.so.11*", "nvtx/lib/libnvToolsExt.so.1", "cuda_nvrtc/lib/libnvrtc.so.11*",
    "cublas/lib/libcublasLt.so.11", "cublas/lib/libcublas.so.11", "cufft/lib/libcufft.so.10",
    "curand/lib/libcurand.so.10", "cusolver/lib/libcusolver.so.11", "nccl/lib/libnccl.so.2",
    "cudnn/lib/libcudnn.so.8", "cudnn/lib/libcudnn_ops_infer.so.8", "cudnn/lib/libcudnn_ops_train.so.8",
    "cudnn/lib/libcudnn_cnn_infer.so.8", "cudnn/lib/libcudnn_cnn_train.so.8", "cudnn/lib/libcudnn_adv_infer.so.8",
    "cudnn/lib/libcudnn_adv_train.so.8",
]


def preload():
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations if spec else []):
        for pattern in LIBRARIES:
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


preload()
