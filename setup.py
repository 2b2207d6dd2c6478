"""Builds compress_kernels._C: the C++ CPU kernels always, the CUDA kernels when torch has CUDA
and nvcc is found (no GPU is needed to build). Nothing is downloaded."""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

# -ffp-contract=off: float epilogues must round exactly like the reference (no fused multiply-add).
# -fopenmp: at::parallel_for is an inline template over `#pragma omp parallel` in torch's OpenMP
# builds; without the flag every op silently runs on one thread.
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-std=c++17", "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]

INCLUDE_DIRS = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "include")]

cpu_sources = (sorted(glob.glob("csrc/cpu/*.cpp")) + ["csrc/ops/registration.cpp", "csrc/ops/meta.cpp"]
               + sorted(glob.glob("csrc/ops/cpu*.cpp")))
cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/ops/cuda*.cpp"))
with_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and bool(cuda_sources)

if with_cuda:
    extension = cpp_extension.CUDAExtension(
        "compress_kernels._C",
        cpu_sources + cuda_sources,
        include_dirs=INCLUDE_DIRS,
        define_macros=[("CK_WITH_CUDA", "1")],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
        extra_link_args=LINK_FLAGS,
    )
else:
    extension = cpp_extension.CppExtension(
        "compress_kernels._C",
        cpu_sources,
        include_dirs=INCLUDE_DIRS,
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=LINK_FLAGS,
    )

setup(
    packages=find_packages(include=["compress_kernels*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
