// edgeinf streaming low-bit GEMV / small-M GEMM: a persistent grid over flattened (tile, K-chunk)
// work units. Same weight layout, scales and arguments as qgemm.cu (kernels/layout.py), plus an
// fp32 workspace and arrival counters for tiles whose K is split between warps.
//
// * Work: the U = tiles * chunks units of 16 rows x 256 K are ordered (K slice, tile, chunk) and
//   cut into gridDim.x contiguous, balanced ranges, one per CTA (the host launches SMs x CTAs per
//   SM of them, from the real occupancy), and each CTA's range into one contiguous range per warp.
//   A warp streams through its range across tile boundaries: no waves, no tail wave.
// * Split tiles: a warp that covers only part of a tile's chunks adds its fp32 partial sums to the
//   workspace (atomics), then adds the number of chunks it covered to the tile's counter; the warp
//   that brings it to `nchunk` reads the sums back (resetting them to 0), adds the bias and writes
//   the output, and resets the counter. A tile covered whole by one warp is written directly. The
//   workspace is therefore all zeros between launches (the host zeroes it once).
// * Weights: each warp owns a ring of STAGES shared-memory stages filled by cp.async (16 B per lane,
//   L2 evict-first, sm_80+), STAGES-1 units in flight while one is computed; a lane reads back the
//   bytes it copied itself, the scales (copied by a few lanes) after a __syncwarp.
// * Activations: the rows of x for the current K slice sit in shared memory (the slab), loaded once
//   per CTA and read by all its warps; past K it is zero (no bounds checks in the inner loop). The
//   host sizes the slices so the slab fits (one slice when x fits whole).
// * M classes at compile time: _m8 (M <= 8, one MMA per 16x16 weights) and _m16 (M <= 16, two MMAs
//   sharing the dequantized weights); larger M runs _m16 over the grid's z axis (16 rows each).
// * Dequantization: the in-place LOP3 + HFMA2 form of qgemm_common.cuh (Dequant<BITS>).
#include "qgemm_common.cuh"

namespace edgeinf {
namespace stream {

constexpr int kWarps = 4;  // warps per CTA
// Ring stages per warp: about 8 KiB of weights for bits <= 4, 12-16 KiB for 5, 6 and 8.
template <int BITS> struct Stages { static constexpr int value = BITS == 2 ? 8 : BITS == 3 ? 6 : 4; };
// Bytes of one ring stage: the weights of a unit, then NS scale groups of 16 fp16 (32 B each).
template <int BITS, int NS> struct StageBytes { static constexpr int value = 512 * BITS + 32 * NS; };
template <int BITS, int NS> struct RingBytes {
  static constexpr int value = Stages<BITS>::value * StageBytes<BITS, NS>::value;
};
constexpr int kSlabPad = 32;  // fp16 per slab row beyond its slice: rows 2p and 2p+1 hit other banks

__device__ __forceinline__ uint64_t evict_first_policy() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
#else
  return 0;
#endif
}

// 16 bytes global -> shared without the registers: cp.async on sm_80+, a plain copy before.
__device__ __forceinline__ void copy16(void* dst, const void* src, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "l"(policy));
#elif defined(EDGEINF_EMU)
  (void)policy;
  emu::cp_async(dst, src, 16);
#else
  (void)policy;
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}
__device__ __forceinline__ void commit_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;");
#elif defined(EDGEINF_EMU)
  emu::cp_async_commit();
#endif
}
// Wait until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
#elif defined(EDGEINF_EMU)
  emu::cp_async_wait(N);
#endif
}

struct Args {
  const uint8_t* pa;
  const uint8_t* pb;
  const __half* scales;
  const __half* x;
  const __half* bias;
  __half* y;
  float* ws;
  int* counters;
  int M, N, K, nchunk, npad, gsb, slice_chunks;
  float out_mul;
};

// Scale groups of one chunk: 0 (one scale per row), 2 (groups of 128), 8 / gsb (any group).
template <int NS>
__device__ __forceinline__ int groups_per_chunk(int gsb) { return NS == 0 ? 0 : NS == 2 ? 2 : 8 / gsb; }

// Copy unit (tile, chunk) into a ring stage: each lane its own 16-byte pieces of every plane, and
// lanes 0 .. 2*groups-1 the stage's scale groups (16 fp16 rows each, two lanes per group).
template <int BITS, int NS>
__device__ __forceinline__ void issue_unit(uint8_t* st, const Args& a, int tile, int chunk, int lane, uint64_t pol) {
  constexpr int WA = Planes<BITS>::A, WB = Planes<BITS>::B;
  const size_t tc = static_cast<size_t>(tile) * a.nchunk + chunk;
#pragma unroll
  for (int l = 0; l < WA; ++l) copy16(st + l * 512 + lane * 16, a.pa + tc * (512 * WA) + l * 512 + lane * 16, pol);
#pragma unroll
  for (int l = 0; l < WB; ++l)
    copy16(st + 512 * WA + l * 512 + lane * 16, a.pb + tc * (512 * WB) + l * 512 + lane * 16, pol);
  const int ng = groups_per_chunk<NS>(a.gsb);
  if (lane < 2 * ng) {
    const int j = lane >> 1, h = lane & 1;
    copy16(st + 512 * BITS + j * 32 + h * 16, a.scales + static_cast<size_t>(chunk * ng + j) * a.npad + tile * 16 + 8 * h, pol);
  }
}

template <int MC>
struct Acc {
  float v[MC / 8][4];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MC / 8; ++i) v[i][0] = v[i][1] = v[i][2] = v[i][3] = 0.f;
  }
};

// acc += ct * s (rows g -> s.x, rows g+8 -> s.y), ct = 0.
template <int MC>
__device__ __forceinline__ void scale_into(Acc<MC>& acc, Acc<MC>& ct, uint32_t s2) {
  const float2 s = __half22float2(*reinterpret_cast<half2*>(&s2));
#pragma unroll
  for (int i = 0; i < MC / 8; ++i) {
    acc.v[i][0] += ct.v[i][0] * s.x;
    acc.v[i][1] += ct.v[i][1] * s.x;
    acc.v[i][2] += ct.v[i][2] * s.y;
    acc.v[i][3] += ct.v[i][3] * s.y;
  }
  ct.zero();
}

// One unit from its ring stage: xs_a / xs_b = the slab rows of B columns g and g+8 at this chunk.
template <int BITS, int NS, int MC>
__device__ __forceinline__ void compute_unit(const uint8_t* st, Acc<MC>& acc, Acc<MC>& ct, const __half* xs_a,
                                             const __half* xs_b, int gsb, int lane) {
  constexpr int WA = Planes<BITS>::A, WB = Planes<BITS>::B;
  const int g = lane >> 2, t = lane & 3;
  PlaneRegs<WA> pa;
  PlaneRegs<WB> pb;
#pragma unroll
  for (int l = 0; l < WA; ++l) {
    const uint4 v = *reinterpret_cast<const uint4*>(st + l * 512 + lane * 16);
    pa.w[4 * l] = v.x, pa.w[4 * l + 1] = v.y, pa.w[4 * l + 2] = v.z, pa.w[4 * l + 3] = v.w;
  }
#pragma unroll
  for (int l = 0; l < WB; ++l) {
    const uint4 v = *reinterpret_cast<const uint4*>(st + 512 * WA + l * 512 + lane * 16);
    pb.w[4 * l] = v.x, pb.w[4 * l + 1] = v.y, pb.w[4 * l + 2] = v.z, pb.w[4 * l + 3] = v.w;
  }
  const int gshift = NS == 8 ? __ffs(gsb) - 1 : 0;
#pragma unroll
  for (int blk = 0; blk < 8; ++blk) {
    const uint4 xa = *reinterpret_cast<const uint4*>(xs_a + blk * 32 + 8 * t);
    uint4 xb = xa;
    if (MC == 16) xb = *reinterpret_cast<const uint4*>(xs_b + blk * 32 + 8 * t);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint32_t a[4] = {Dequant<BITS>::pair(pa, pb, 8 * blk + 4 * j + 0), Dequant<BITS>::pair(pa, pb, 8 * blk + 4 * j + 1),
                             Dequant<BITS>::pair(pa, pb, 8 * blk + 4 * j + 2), Dequant<BITS>::pair(pa, pb, 8 * blk + 4 * j + 3)};
      const uint32_t b0[2] = {j ? xa.z : xa.x, j ? xa.w : xa.y};
      mma16816(ct.v[0], a, b0);
      if (MC == 16) {
        const uint32_t b1[2] = {j ? xb.z : xb.x, j ? xb.w : xb.y};
        mma16816(ct.v[MC / 8 - 1], a, b1);
      }
    }
    // the end of a scale group: fold its partial sums in with the group's scale
    const bool done = NS == 2 ? (blk & 3) == 3 : NS == 8 ? ((blk + 1) & (gsb - 1)) == 0 : false;
    if (done) {
      const int slot = NS == 2 ? blk >> 2 : blk >> gshift;
      scale_into(acc, ct, *reinterpret_cast<const uint32_t*>(st + 512 * BITS + slot * 32 + 4 * g));
    }
  }
}

// The partial sums of `tile` over `units` of its chunks: written directly when they are the whole
// tile, else added to the workspace; the last contributor writes the output. Leaves acc = 0.
template <int NS, int MC>
__device__ __forceinline__ void flush_tile(const Args& a, Acc<MC>& acc, Acc<MC>& ct, int tile, int units, int lane) {
  const int g = lane >> 2, t = lane & 3;
  if (NS == 0) scale_into(acc, ct, __ldg(reinterpret_cast<const unsigned int*>(a.scales + tile * 16 + 2 * g)));
  // C[n][m] of one MMA: c0 = (g, 2t), c1 = (g, 2t+1), c2 = (g+8, 2t), c3 = (g+8, 2t+1); +8 on m for the second
  auto m_of = [&](int i) { return (i >> 2) * 8 + 2 * t + (i & 1); };
  auto n_of = [&](int i) { return tile * 16 + g + ((i >> 1) & 1) * 8; };
  bool write = units == a.nchunk;
  if (!write) {
#pragma unroll
    for (int i = 0; i < MC / 2; ++i)
      if (m_of(i) < a.M && n_of(i) < a.N) atomicAdd(a.ws + static_cast<size_t>(m_of(i)) * a.npad + n_of(i), acc.v[i >> 2][i & 3]);
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(a.counters + tile, units) + units == a.nchunk;
    write = __shfl_sync(0xffffffffu, last, 0) != 0;
    if (write) {
      __threadfence();
#pragma unroll
      for (int i = 0; i < MC / 2; ++i)
        if (m_of(i) < a.M && n_of(i) < a.N) acc.v[i >> 2][i & 3] = atomicExch(a.ws + static_cast<size_t>(m_of(i)) * a.npad + n_of(i), 0.f);
      if (lane == 0) atomicExch(a.counters + tile, 0);
    }
  }
  if (write) {
#pragma unroll
    for (int i = 0; i < MC / 2; ++i) {
      const int m = m_of(i), n = n_of(i);
      if (m < a.M && n < a.N) {
        float v = acc.v[i >> 2][i & 3] * a.out_mul;
        if (a.bias) v += __half2float(a.bias[n]);
        a.y[static_cast<size_t>(m) * a.N + n] = __float2half_rn(v);
      }
    }
  }
  acc.zero();
}

// The slab: rows 0..R-1 of x over chunks [chunk0, chunk0 + n) of K, zeros past K, row stride
// `stride` fp16. 16-byte cp.async pieces where x allows it, else element by element.
__device__ __forceinline__ void load_slab(__half* slab, const Args& a, int rows, int stride, int chunk0, int n, bool vec) {
  const int per_row = n * (kChunkK / 8), tid = threadIdx.x + 32 * threadIdx.y;
  const int k0 = chunk0 * kChunkK;
  for (int p = tid; p < rows * per_row; p += 32 * kWarps) {
    const int r = p / per_row, k = k0 + (p % per_row) * 8;
    __half* dst = slab + r * stride + (k - k0);
    const __half* src = a.x + static_cast<size_t>(r) * a.K + k;
    if (vec && k + 8 <= a.K) {
      copy16(dst, src, 0);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[i] = k + i < a.K ? src[i] : __float2half(0.f);
    }
  }
  commit_group();
  wait_group<0>();
  __syncthreads();
}

// A warp's contiguous range [u0, u1) of the units of slice (chunk0, n): the cp.async ring, one
// unit computed while STAGES-1 are in flight, a flush at every tile boundary and at the end.
template <int BITS, int NS, int MC>
__device__ __forceinline__ void stream_range(const Args& a, uint8_t* ring, const __half* slab, int stride, int rows,
                                             long long base, int chunk0, int n, long long u0, long long u1, int lane) {
  constexpr int D = Stages<BITS>::value, SB = StageBytes<BITS, NS>::value;
  const uint64_t pol = evict_first_policy();
  const int g = lane >> 2;
  const __half* xa = slab + min(g, rows - 1) * stride;
  const __half* xb = slab + min(g + 8, rows - 1) * stride;
  auto issue = [&](long long u, int slot) {
    if (u < u1) {
      const int r = static_cast<int>(u - base);
      issue_unit<BITS, NS>(ring + slot * SB, a, r / n, chunk0 + r % n, lane, pol);
    }
    commit_group();  // always one group per step, so wait_group<D-1> below counts steps
  };
#pragma unroll
  for (int i = 0; i < D - 1; ++i) issue(u0 + i, i);
  Acc<MC> acc, ct;
  acc.zero();
  ct.zero();
  int cur = -1, units = 0, slot = 0;
  for (long long u = u0; u < u1; ++u) {
    issue(u + D - 1, slot == 0 ? D - 1 : slot - 1);  // the stage computed last step
    wait_group<D - 1>();
    __syncwarp();
    const int r = static_cast<int>(u - base), tile = r / n, c = r % n;
    if (tile != cur) {
      if (cur >= 0) flush_tile<NS, MC>(a, acc, ct, cur, units, lane);
      cur = tile;
      units = 0;
    }
    compute_unit<BITS, NS, MC>(ring + slot * SB, acc, ct, xa + c * kChunkK, xb + c * kChunkK, a.gsb, lane);
    ++units;
    slot = slot == D - 1 ? 0 : slot + 1;
    __syncwarp();
  }
  if (cur >= 0) flush_tile<NS, MC>(a, acc, ct, cur, units, lane);
  wait_group<0>();
}

template <int BITS, int NS, int MC>
__device__ __forceinline__ void qstream(Args a) {
#ifdef EDGEINF_EMU
  uint8_t* smem = emu::dynamic_shared();
#else
  extern __shared__ __align__(16) uint8_t edgeinf_smem[];
  uint8_t* smem = edgeinf_smem;
#endif
  const int lane = threadIdx.x, warp = threadIdx.y, tiles = a.npad / 16;
  const int z = blockIdx.z;  // M > 16: 16 rows per z
  a.x += static_cast<size_t>(z) * 16 * a.K;
  a.y += static_cast<size_t>(z) * 16 * a.N;
  a.ws += static_cast<size_t>(z) * 16 * a.npad;
  a.counters += z * tiles;
  a.M -= z * 16;
  const int rows = min(a.M, MC), L = a.slice_chunks, stride = L * kChunkK + kSlabPad;
  const bool vec = (a.K % 8 == 0) && ((reinterpret_cast<uintptr_t>(a.x) & 15) == 0);
  uint8_t* ring = smem + warp * RingBytes<BITS, NS>::value;
  __half* slab = reinterpret_cast<__half*>(smem + kWarps * RingBytes<BITS, NS>::value);
  const long long units = static_cast<long long>(tiles) * a.nchunk, per_slice = static_cast<long long>(tiles) * L;
  const long long lo = units * blockIdx.x / gridDim.x, hi = units * (blockIdx.x + 1) / gridDim.x;
  for (long long u = lo; u < hi;) {
    const int s = static_cast<int>(u / per_slice), chunk0 = s * L, n = min(L, a.nchunk - chunk0);
    const long long base = s * per_slice, end = min(hi, base + static_cast<long long>(tiles) * n);
    __syncthreads();  // every warp is done with the previous slab
    load_slab(slab, a, rows, stride, chunk0, n, vec);
    const long long w0 = u + (end - u) * warp / kWarps, w1 = u + (end - u) * (warp + 1) / kWarps;
    stream_range<BITS, NS, MC>(a, ring, slab, stride, rows, base, chunk0, n, w0, w1, lane);
    u = end;
  }
}

}  // namespace stream
}  // namespace edgeinf

// Entry points edgeinf_qstream_w<bits>_{pc,g128,g}_m{8,16}: the scale variants of qgemm.cu, each
// for the M class 8 and 16. At most 128 registers (four 4-warp CTAs per SM).
#define EDGEINF_QSTREAM(BITS, SUFFIX, NS, MC)                                                                  \
  extern "C" __global__ void __launch_bounds__(32 * edgeinf::stream::kWarps, 16 / edgeinf::stream::kWarps)     \
      edgeinf_qstream_w##BITS##SUFFIX##_m##MC(                                                                 \
          const uint8_t* __restrict__ pa, const uint8_t* __restrict__ pb, const __half* __restrict__ scales,   \
          const __half* __restrict__ x, const __half* __restrict__ bias, __half* __restrict__ y, float* ws,    \
          int* counters, int M, int N, int K, int nchunk, int npad, int gsb, float out_mul, int slice_chunks) { \
    edgeinf::stream::qstream<BITS, NS, MC>(                                                                    \
        {pa, pb, scales, x, bias, y, ws, counters, M, N, K, nchunk, npad, gsb, slice_chunks, out_mul});       \
  }
#define EDGEINF_QSTREAM_M(BITS, SUFFIX, NS) \
  EDGEINF_QSTREAM(BITS, SUFFIX, NS, 8)      \
  EDGEINF_QSTREAM(BITS, SUFFIX, NS, 16)

EDGEINF_FOR_EACH_ENTRY(EDGEINF_QSTREAM_M)
