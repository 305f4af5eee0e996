// Stand-in for CUDA's <cuda_fp16.h> when kernels/qgemm.cu is compiled for the host emulator.
#pragma once
#include "emu.h"
