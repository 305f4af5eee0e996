// The streaming-read floor of benchmarks/bench_kernels.py: read n16 x 16 bytes once, with the
// loads the low-bit kernels use (non-coherent, no L1 allocation), and store nothing unless the
// data hashes to a magic value (it keeps the loads alive). Timed over the same rotated buffers
// and CUDA graph as the kernels, it is the fastest a kernel reading those bytes can be.
#include <stdint.h>

__device__ __forceinline__ uint4 ld_stream16(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

extern "C" __global__ void __launch_bounds__(256) edgeinf_read_floor(const uint4* __restrict__ p, long long n16,
                                                                     unsigned* out) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i + 3 * stride < n16; i += 4 * stride) {  // four 16-byte loads in flight per thread
    const uint4 a = ld_stream16(p + i), b = ld_stream16(p + i + stride);
    const uint4 c = ld_stream16(p + i + 2 * stride), d = ld_stream16(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n16; i += stride) {
    const uint4 a = ld_stream16(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}
