// edgeinf low-bit weight-only GEMV (M = 1) and small-M GEMM (M <= 16 per tile; larger M tiles the
// grid's z axis), fp16 activations, fp32 accumulation, per-group scales, optional bias.
//
// One source templated on the bit width. Weights come in the kernel layout written by
// kernels/layout.py (its numpy reference documents every index): the unsigned code
// u = q + 2^(bits-1) is split into a low plane of width A and a high plane of width B
// (2: 2+0, 3: 2+1, 4: 4+0, 5: 4+1, 6: 4+2, 8: 8+0). The kernel computes Y^T = W X^T with
// m16n8k16 tensor-core MMAs: a 16-row weight tile is the A operand and 8 activation rows are the
// B operand, so M <= 8 costs one MMA per 16x16 weights and M <= 16 two (sharing the dequantized
// weights). K comes in chunks of 256; for one (tile, chunk) each lane of a warp holds exactly the
// A-fragment values it feeds to the MMA, read with coalesced 16-byte loads and no shared memory.
// Each 32-element K block is permuted so that a lane's activation fragment for two MMAs is 8
// consecutive fp16 values (one 16-byte load straight into the B registers). Codes become fp16
// with the magic-number trick ((1024 + u) - (1024 + 2^(b-1))), exact integers (EDGEINF_LOP3_DEQUANT
// reads the fields in place instead: fewer instructions, see dequant_pair); the MMA
// accumulates x * q in fp32 and each group's partial sum is scaled in fp32 (scales are stored
// fp16, pre-multiplied by 2^e; out_mul = 2^-e undoes it).
#include "qgemm_common.cuh"

namespace edgeinf {

constexpr int kMaxWarps = 8;   // warps per block (split-K inside the block)
#ifndef EDGEINF_DEPTH
#define EDGEINF_DEPTH 2
#endif
#ifndef EDGEINF_DEPTH8
#define EDGEINF_DEPTH8 2
#endif
#ifndef EDGEINF_DEPTH_G128
#define EDGEINF_DEPTH_G128 EDGEINF_DEPTH
#endif
constexpr int kDepth = EDGEINF_DEPTH;    // register stages per warp (2 or 3), bits 2..6
constexpr int kDepth8 = EDGEINF_DEPTH8;  // the same for 8-bit weights
constexpr int kDepthG128 = EDGEINF_DEPTH_G128;  // bits 2..6 with groups of 128 (fewer scale registers)
// Tuning (EDGEINF_KERNEL_DEFINES, timed side by side by benchmarks/bench_kernels.py --variants):
// EDGEINF_MIN_BLOCKS=2 asks ptxas for two 256-thread blocks per SM (at most 128 registers) for
// bits 2 and 4 with per-row scales or groups of 128; ptxas reports 116-211 registers without it,
// i.e. one 8-warp block per SM for most kernels. The other widths and the any-group kernels
// (eight scale slots) keep one block: at 128 registers some of them spill on some architectures.
#ifndef EDGEINF_MIN_BLOCKS
#define EDGEINF_MIN_BLOCKS 1
#endif

template <int BITS>
__device__ __forceinline__ uint32_t dequant_pair(const PlaneRegs<Planes<BITS>::A>& a,
                                                 const PlaneRegs<Planes<BITS>::B>& b, int p) {
#ifndef EDGEINF_LOP3_DEQUANT  // shift, mask, or, subtract: the form timed on the H100
  constexpr uint32_t bias1 = 0x6400u + (1u << (BITS - 1));
  uint32_t v = field<Planes<BITS>::A>(a, p) | (field<Planes<BITS>::B>(b, p) << Planes<BITS>::A);
  v |= 0x64006400u;
  const uint32_t bias = bias1 | (bias1 << 16);
  half2 h = __hsub2(*reinterpret_cast<half2*>(&v), *reinterpret_cast<const half2*>(&bias));
  return *reinterpret_cast<uint32_t*>(&h);
#else
  return Dequant<BITS>::pair(a, b, p);
#endif
}

// 8 activations row[k .. k+7] for a chunk that crosses the end of K (zeros past K; the padded
// weights there are q = 0 anyway) or whose rows are not 16-byte aligned.
__device__ __forceinline__ uint4 load_x8(const __half* row, int K, int k, bool vec) {
  if (vec && k + 8 <= K) return __ldg(reinterpret_cast<const uint4*>(row + k));
  __half h[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) h[i] = (k + i < K) ? row[k + i] : __float2half(0.f);
  return *reinterpret_cast<uint4*>(h);
}

// NS = scale slots per chunk: 0 = one scale per row (applied at the end), 2 = groups of 128
// (gsb = 4, the common case, fixed at compile time), 8 = any power-of-two group (gsb 1..8 at run
// time). Fewer slots, fewer registers per stage.
template <int BITS, int NS>
struct Stage {
  PlaneRegs<Planes<BITS>::A> a;
  PlaneRegs<Planes<BITS>::B> b;
  uint32_t s[NS > 0 ? NS : 1];  // fp16x2 scales of columns 2t, 2t+1
};

// The scale slot flushed after block blk of a chunk, or -1 (all compile-time when NS < 8).
template <int NS>
__device__ __forceinline__ int slot_after(int blk, int gsb) {
  constexpr int per = 8 / (NS > 0 ? NS : 8);  // blocks per group when fixed
  if (NS == 0) return -1;
  if (NS < 8) return ((blk + 1) % per) == 0 ? blk / per : -1;
  return ((blk + 1) & (gsb - 1)) == 0 ? blk : -1;  // gsb is a power of two: masks, no division
}

template <int BITS, int NS>
__device__ __forceinline__ void load_stage(Stage<BITS, NS>& st, const uint8_t* pa, const uint8_t* pb,
                                           const __half* scales, int tile, int chunk, int nchunk,
                                           int npad, int gsb, int lane) {
  constexpr int WA = Planes<BITS>::A, WB = Planes<BITS>::B;
  const size_t tc = (size_t)tile * nchunk + chunk;
  load_plane<WA>(st.a, pa + tc * (512 * WA), lane);
  load_plane<WB>(st.b, pb + tc * (512 * WB), lane);
  const int col = tile * 16 + 2 * (lane >> 2);  // fp16x2: rows g and g+8 of the tile
  const int gshift = NS < 8 ? 0 : __ffs(gsb) - 1;
#pragma unroll
  for (int blk = 0; blk < 8; ++blk) {
    const int sl = slot_after<NS>(blk, gsb);
    if (sl >= 0) {
      const int group = NS < 8 ? chunk * NS + sl : (chunk * 8 + blk) >> gshift;
      st.s[NS < 8 ? sl : blk] = __ldg(reinterpret_cast<const unsigned int*>(scales + (size_t)group * npad + col));
    }
  }
}

// acc += ct * scale (rows g -> s.x, rows g+8 -> s.y), then ct = 0.
__device__ __forceinline__ void flush(float* acc, float* ct, uint32_t s2) {
  float2 s = __half22float2(*reinterpret_cast<half2*>(&s2));
  acc[0] += ct[0] * s.x;
  acc[1] += ct[1] * s.x;
  acc[2] += ct[2] * s.y;
  acc[3] += ct[3] * s.y;
  ct[0] = ct[1] = ct[2] = ct[3] = 0.f;
}

// TAIL = the chunk crosses the end of K (or rows are not 16-byte aligned): bounds-checked
// activation loads. The common chunk has none of that code, so nothing is if-converted into it.
// acc/ct hold two 16x8 C tiles: activation rows 0..7 and 8..15 (the second only when two_m).
template <int BITS, int NS, bool TAIL>
__device__ __forceinline__ void compute_stage(const Stage<BITS, NS>& st, float (&acc)[2][4], float (&ct)[2][4],
                                              const __half* xa_row, const __half* xb_row, int K, int chunk,
                                              int gsb, bool vec, bool two_m, int lane) {
  const int t = lane & 3;
#pragma unroll
  for (int blk = 0; blk < 8; ++blk) {
    const int k = chunk * kChunkK + blk * 32 + 8 * t;
    const uint4 xa = TAIL ? load_x8(xa_row, K, k, vec) : __ldg(reinterpret_cast<const uint4*>(xa_row + k));
    uint4 xb = xa;
    if (two_m) xb = TAIL ? load_x8(xb_row, K, k, vec) : __ldg(reinterpret_cast<const uint4*>(xb_row + k));
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint32_t a[4] = {dequant_pair<BITS>(st.a, st.b, 8 * blk + 4 * j + 0),
                             dequant_pair<BITS>(st.a, st.b, 8 * blk + 4 * j + 1),
                             dequant_pair<BITS>(st.a, st.b, 8 * blk + 4 * j + 2),
                             dequant_pair<BITS>(st.a, st.b, 8 * blk + 4 * j + 3)};
      const uint32_t b0[2] = {j ? xa.z : xa.x, j ? xa.w : xa.y};
      mma16816(ct[0], a, b0);
      if (two_m) {
        const uint32_t b1[2] = {j ? xb.z : xb.x, j ? xb.w : xb.y};
        mma16816(ct[1], a, b1);
      }
    }
    const int sl = slot_after<NS>(blk, gsb);
    if (sl >= 0) {
      flush(acc[0], ct[0], st.s[NS < 8 ? sl : blk]);
      if (two_m) flush(acc[1], ct[1], st.s[NS < 8 ? sl : blk]);
    }
  }
}

template <int BITS, int NS>
__device__ __forceinline__ void qgemm(const uint8_t* __restrict__ pa, const uint8_t* __restrict__ pb,
                                      const __half* __restrict__ scales, const __half* __restrict__ x,
                                      const __half* __restrict__ bias, __half* __restrict__ y, int M, int N,
                                      int K, int nchunk, int npad, int gsb, float out_mul) {
  __shared__ float red[kMaxWarps][32][8];
  const int lane = threadIdx.x, warp = threadIdx.y, nwarps = blockDim.y;
  const int tile = blockIdx.x, m0 = blockIdx.z * 16, g = lane >> 2, t = lane & 3;
  x += (size_t)m0 * K;
  y += (size_t)m0 * N;
  M -= m0;
  const bool vec = (K % 8 == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0);
  const bool two_m = M > 8;
  // B columns g and 8+g read activation rows clamped to M-1: rows >= M are computed, never stored.
  const __half* xa_row = x + (size_t)min(g, M - 1) * K;
  const __half* xb_row = x + (size_t)min(g + 8, M - 1) * K;
  const int full_chunks = vec ? K / kChunkK : 0;  // chunks that need no bounds checks
  float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
  float ct[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
  // Chunks in flight per warp: DEPTH stages in registers (DEPTH-1 chunks loading while one is
  // computed). The loop is unrolled by hand over the stages so that no register copy waits on an
  // outstanding load. 8-bit stages are twice as large: fewer of them keeps the occupancy up.
  constexpr int DEPTH = BITS == 8 ? kDepth8 : NS == 2 ? kDepthG128 : kDepth;
  Stage<BITS, NS> s0, s1, s2;
  int c = warp;
  if (c < nchunk) load_stage<BITS, NS>(s0, pa, pb, scales, tile, c, nchunk, npad, gsb, lane);
  if (DEPTH == 3 && c + nwarps < nchunk) load_stage<BITS, NS>(s1, pa, pb, scales, tile, c + nwarps, nchunk, npad, gsb, lane);
#define EDGEINF_STEP(NEXT, CUR)                                                                        \
  if (c >= nchunk) break;                                                                              \
  if (c + (DEPTH - 1) * nwarps < nchunk)                                                               \
    load_stage<BITS, NS>(NEXT, pa, pb, scales, tile, c + (DEPTH - 1) * nwarps, nchunk, npad, gsb, lane); \
  if (c < full_chunks)                                                                                 \
    compute_stage<BITS, NS, false>(CUR, acc, ct, xa_row, xb_row, K, c, gsb, vec, two_m, lane);         \
  else                                                                                                 \
    compute_stage<BITS, NS, true>(CUR, acc, ct, xa_row, xb_row, K, c, gsb, vec, two_m, lane);          \
  c += nwarps;
  if (DEPTH == 3) {
    for (;;) {
      EDGEINF_STEP(s2, s0)
      EDGEINF_STEP(s0, s1)
      EDGEINF_STEP(s1, s2)
    }
  } else {
    for (;;) {
      EDGEINF_STEP(s1, s0)
      EDGEINF_STEP(s0, s1)
    }
  }
#undef EDGEINF_STEP
  if (NS == 0) {  // one scale per row: applied once at the end
    const uint32_t s2 = __ldg(reinterpret_cast<const unsigned int*>(scales + tile * 16 + 2 * g));
    flush(acc[0], ct[0], s2);
    flush(acc[1], ct[1], s2);
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) red[warp][lane][i] = acc[i >> 2][i & 3];
  __syncthreads();
  if (warp != 0) return;
  for (int w = 1; w < nwarps; ++w)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i >> 2][i & 3] += red[w][lane][i];
  // C[n][m]: c0 = (g, 2t), c1 = (g, 2t+1), c2 = (g+8, 2t), c3 = (g+8, 2t+1); tile 1 adds 8 to m.
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = (i >> 2) * 8 + 2 * t + (i & 1), n = tile * 16 + g + ((i >> 1) & 1) * 8;
    if (m < M && n < N) {
      float v = acc[i >> 2][i & 3] * out_mul;
      if (bias) v += __half2float(bias[n]);
      y[(size_t)m * N + n] = __float2half_rn(v);
    }
  }
}

}  // namespace edgeinf

// Entry points: edgeinf_qgemm_w<bits>_pc (one scale per row), _g128 (groups of 128) and
// _g (any power-of-two group size from 32 to 256, given as gsb = group / 32), for every width
// of EDGEINF_FOR_EACH_ENTRY (qgemm_common.cuh).
#define EDGEINF_QGEMM(BITS, SUFFIX, NS)                                                                  \
  extern "C" __global__ void __launch_bounds__(256, (BITS == 2 || BITS == 4) && NS < 8 ? EDGEINF_MIN_BLOCKS : 1) \
      edgeinf_qgemm_w##BITS##SUFFIX(                                                                     \
      const uint8_t* __restrict__ pa, const uint8_t* __restrict__ pb, const __half* __restrict__ scales, \
      const __half* __restrict__ x, const __half* __restrict__ bias, __half* __restrict__ y, int M, int N, \
      int K, int nchunk, int npad, int gsb, float out_mul) {                                             \
    edgeinf::qgemm<BITS, NS>(pa, pb, scales, x, bias, y, M, N, K, nchunk, npad, gsb, out_mul);           \
  }

EDGEINF_FOR_EACH_ENTRY(EDGEINF_QGEMM)
