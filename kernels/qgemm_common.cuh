// Device code shared by the edgeinf kernels (qgemm.cu, the classic grid; qstream.cu, the persistent
// streaming grid): the bit-plane registers of a lane, the in-place LOP3 + HFMA2 dequantization, and
// the m16n8k16 MMA with its portable warp-shuffle form. See qgemm.cu for the layout.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

namespace edgeinf {

constexpr int kChunkK = 256;   // K elements per chunk (8 blocks of 32)
template <int BITS> struct Planes;
template <> struct Planes<2> { static constexpr int A = 2, B = 0; };
template <> struct Planes<3> { static constexpr int A = 2, B = 1; };
template <> struct Planes<4> { static constexpr int A = 4, B = 0; };
template <> struct Planes<5> { static constexpr int A = 4, B = 1; };
template <> struct Planes<6> { static constexpr int A = 4, B = 2; };
template <> struct Planes<8> { static constexpr int A = 8, B = 0; };

// A lane's words of one plane for one (tile, chunk): 128 values of W bits = 4W words.
template <int W> struct PlaneRegs { uint32_t w[4 * W]; };
template <> struct PlaneRegs<0> { uint32_t w[1]; };

__device__ __forceinline__ uint4 ld_stream16(const void* p) {
#if defined(__CUDA_ARCH__)
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
#else  // the host emulator of the tests (tests/cuda_emu): a plain load
  return *reinterpret_cast<const uint4*>(p);
#endif
}

// Plane bytes of one (tile, chunk) are 512*W: [W loads][32 lanes][16 B].
template <int W>
__device__ __forceinline__ void load_plane(PlaneRegs<W>& r, const uint8_t* base, int lane) {
#pragma unroll
  for (int l = 0; l < W; ++l) {
    uint4 v = ld_stream16(base + l * 512 + lane * 16);
    r.w[4 * l + 0] = v.x;
    r.w[4 * l + 1] = v.y;
    r.w[4 * l + 2] = v.z;
    r.w[4 * l + 3] = v.w;
  }
}
template <>
__device__ __forceinline__ void load_plane<0>(PlaneRegs<0>& r, const uint8_t*, int) { r.w[0] = 0; }

// Pair p of a plane: two W-bit values at bits (p%per)*W and 16 + (p%per)*W of word p/per.
template <int W>
__device__ __forceinline__ uint32_t field(const PlaneRegs<W>& r, int p) {
  constexpr int per = 16 / W;
  constexpr uint32_t m = (1u << W) - 1u;
  return (r.w[p / per] >> ((p % per) * W)) & (m | (m << 16));
}
template <>
__device__ __forceinline__ uint32_t field<0>(const PlaneRegs<0>&, int) { return 0u; }

// fp16x2 bit patterns built with integer operations (constant-folded once p is unrolled):
// 2^e, and an integer v with at most 11 significant bits.
__device__ __forceinline__ uint32_t h2_pow2(int e) {
  const uint32_t h = static_cast<uint32_t>(e + 15) << 10;
  return h | (h << 16);
}
__device__ __forceinline__ uint32_t h2_int(int v) {
  const uint32_t sign = v < 0 ? 0x8000u : 0u, a = static_cast<uint32_t>(v < 0 ? -v : v);
  const int e = 31 - __clz(static_cast<int>(a));
  const uint32_t mant = (e <= 10 ? a << (10 - e) : a >> (e - 10)) & 0x3ffu;
  const uint32_t h = sign | (static_cast<uint32_t>(e + 15) << 10) | mant;
  return h | (h << 16);
}

__device__ __forceinline__ uint32_t hfma2u(uint32_t a, uint32_t b, uint32_t c) {
  half2 r = __hfma2(*reinterpret_cast<half2*>(&a), *reinterpret_cast<half2*>(&b), *reinterpret_cast<half2*>(&c));
  return *reinterpret_cast<uint32_t*>(&r);
}

// (a & b) | c in one LOP3. Written out in PTX because ptxas otherwise splits it into an AND and
// an OR when b and c are both constants (an instruction takes one 32-bit immediate).
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));  // 0xEA = (0xF0 & 0xCC) | 0xAA
  return d;
#else
  return (a & b) | c;
#endif
}

// Pair p of a W-bit plane as fp16x2 of 1024 + v * 2^s, read in place: one AND-OR (a LOP3) puts
// the field under the exponent of 1024, exact while s + W <= 10. Fields higher in the word are
// read from w >> 8 (one shift per word, shared by its pairs). Returns s through `s`.
template <int W>
__device__ __forceinline__ uint32_t plane_magic(const PlaneRegs<W>& r, int p, int& s) {
  constexpr int per = 16 / W;
  constexpr uint32_t m = (1u << W) - 1u;
  uint32_t w = r.w[p / per];
  s = (p % per) * W;
  if (s + W > 10) {
    w >>= 8;
    s -= 8;
  }
  return and_or(w, (m << s) | (m << (16 + s)), 0x64006400u);
}

// fp16x2 of the signed codes q = u - 2^(bits-1) of pair p (exact small integers).
// One plane: q = t * 2^-s - (2^(10-s) + 2^(bits-1)), one HFMA2. Two planes (u = lo + hi * 2^A):
// r = t_hi * 2^(A-sb) - (2^(10+A-sb) + 2^(10-sa) + 2^(bits-1)) = hi * 2^A - 2^(10-sa) - 2^(bits-1),
// then q = t_lo * 2^-sa + r; every constant and intermediate is an integer of at most 11
// significant bits, so both HFMA2s are exact.
template <int BITS, int B = Planes<BITS>::B>
struct Dequant {  // two planes
  static __device__ __forceinline__ uint32_t pair(const PlaneRegs<Planes<BITS>::A>& a, const PlaneRegs<B>& b, int p) {
    constexpr int A = Planes<BITS>::A;
    int sa = 0, sb = 0;
    const uint32_t tl = plane_magic<A>(a, p, sa), th = plane_magic<B>(b, p, sb);
    const uint32_t r = hfma2u(th, h2_pow2(A - sb), h2_int(-((1 << (10 + A - sb)) + (1 << (10 - sa)) + (1 << (BITS - 1)))));
    return hfma2u(tl, h2_pow2(-sa), r);
  }
};
template <int BITS>
struct Dequant<BITS, 0> {  // one plane
  static __device__ __forceinline__ uint32_t pair(const PlaneRegs<Planes<BITS>::A>& a, const PlaneRegs<0>&, int p) {
    int s = 0;
    const uint32_t t = plane_magic<Planes<BITS>::A>(a, p, s);
    return hfma2u(t, h2_pow2(-s), h2_int(-((1 << (10 - s)) + (1 << (BITS - 1)))));
  }
};

__device__ __forceinline__ float dot2(uint32_t a, uint32_t b) {
  float2 fa = __half22float2(*reinterpret_cast<half2*>(&a));
  float2 fb = __half22float2(*reinterpret_cast<half2*>(&b));
  return fa.x * fb.x + fa.y * fb.y;
}

// No tensor-core MMA (sm_53..sm_72 built on the device, or -DEDGEINF_NO_MMA): the m16n8k16
// fragments through warp shuffles and fp32 FMAs. Out of line and by value, so that the unrolled
// main loop stays small (ptxas time) and nothing goes to local memory.
__device__ __noinline__ float4 mma16816_shfl(float4 c, uint4 a, uint2 b) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int tt = 0; tt < 4; ++tt) {
    const int sa = g * 4 + tt, sb0 = (2 * t) * 4 + tt, sb1 = (2 * t + 1) * 4 + tt;
    uint32_t a0 = __shfl_sync(0xffffffffu, a.x, sa), a1 = __shfl_sync(0xffffffffu, a.y, sa);
    uint32_t a2 = __shfl_sync(0xffffffffu, a.z, sa), a3 = __shfl_sync(0xffffffffu, a.w, sa);
    uint32_t b00 = __shfl_sync(0xffffffffu, b.x, sb0), b01 = __shfl_sync(0xffffffffu, b.y, sb0);
    uint32_t b10 = __shfl_sync(0xffffffffu, b.x, sb1), b11 = __shfl_sync(0xffffffffu, b.y, sb1);
    c.x += dot2(a0, b00) + dot2(a2, b01);
    c.y += dot2(a0, b10) + dot2(a2, b11);
    c.z += dot2(a1, b00) + dot2(a3, b01);
    c.w += dot2(a1, b10) + dot2(a3, b11);
  }
  return c;
}

// c += A(16x16, row) * B(16x8, col): the m16n8k16 fragment layout on every architecture.
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(EDGEINF_NO_MMA)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750 && !defined(EDGEINF_NO_MMA)
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(b[0]));
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[2]), "r"(a[3]), "r"(b[1]));
#else
  const float4 r = mma16816_shfl(make_float4(c[0], c[1], c[2], c[3]), make_uint4(a[0], a[1], a[2], a[3]),
                                 make_uint2(b[0], b[1]));
  c[0] = r.x;
  c[1] = r.y;
  c[2] = r.z;
  c[3] = r.w;
#endif
}


}  // namespace edgeinf

// The entry points both kernel families export, in one list: ENTRY(BITS, SUFFIX, NS) for every
// weight bit-width and group mode: _pc (one scale per row, NS 0), _g128 (groups of 128, NS 2) and
// _g (any power-of-two group size from 32 to 256, NS 8). kernels/ops.py names them.
#define EDGEINF_GROUP_MODES(ENTRY, BITS) ENTRY(BITS, _pc, 0) ENTRY(BITS, _g128, 2) ENTRY(BITS, _g, 8)
#define EDGEINF_FOR_EACH_ENTRY(ENTRY)                                                        \
  EDGEINF_GROUP_MODES(ENTRY, 2) EDGEINF_GROUP_MODES(ENTRY, 3) EDGEINF_GROUP_MODES(ENTRY, 4) \
  EDGEINF_GROUP_MODES(ENTRY, 5) EDGEINF_GROUP_MODES(ENTRY, 6) EDGEINF_GROUP_MODES(ENTRY, 8)
