// Package cuda is kdnative's NVIDIA GPU support, bound at run time through
// purego: no cgo, and no CUDA needed to build. A binary built with
// CGO_ENABLED=0 finds the CUDA libraries when it starts computing and says
// which one is missing, and where it looked, when it cannot.
//
// What is here:
//   - the library loader (Lib, Load): libcuda.so.1 (the driver), and the
//     toolkit libraries cuBLAS, cuBLASLt and NVRTC under the sonames of the
//     CUDA 12 and 13 lines, searched in LD_LIBRARY_PATH, $CUDA_HOME,
//     /usr/local/cuda, the system library directories, the dynamic loader's
//     own path, and the lib folders of the nvidia-* Python wheels;
//   - the driver probe (Probe): driver version and each GPU's name, memory and
//     compute capability, for `kdnative doctor`;
//   - NVRTC (LoadNVRTC, CompileProgram): the kernels of package kernels are
//     compiled for the GPU's own architecture at first use and cached on disk
//     (KernelCacheDir) by source hash, options, NVRTC version and architecture;
//   - the Backend: runtime.Backend on one GPU, with the driver API for memory
//     and launches, cuBLAS for the matrix products, a caching allocator, and
//     one stream. It registers as "cuda" (priority 10, above the CPU), so
//     `--device auto` picks it when it opens and otherwise falls back to the
//     CPU with a one-line note saying why.
//
// CUDA is supported on linux/amd64 and linux/arm64 (WSL included); elsewhere
// Load and Probe return an error saying so.
package cuda
