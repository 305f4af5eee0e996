// The kernels of kernels/qgemm.cu and kernels/qstream.cu, compiled for the host emulator (emu.h),
// behind C entry points that tests/test_kernels_emulated.py and test_kernels_stream.py call
// through ctypes.
#include "emu.h"
#include "../../kernels/qgemm.cu"
#ifndef EMU_CLASSIC_ONLY  // builds of qgemm.cu variants leave the streaming kernels out
#include "../../kernels/qstream.cu"
#endif

namespace {

// The C entry points' result: 0 for a clean launch, else 1 with the emulator's one-line reason in err.
int report(const std::string& why, char* err, int errlen) {
  if (why.empty()) return 0;
  std::snprintf(err, static_cast<size_t>(errlen), "%s", why.c_str());
  return 1;
}

// The kernel called `name` in `table`, or nullptr.
template <class Fn, class E, size_t N>
Fn find_kernel(const E (&table)[N], const char* name) {
  for (const E& e : table)
    if (std::strcmp(e.name, name) == 0) return e.fn;
  return nullptr;
}

// The operands every kernel takes, typed from the C entry points' untyped pointers.
struct Operands {
  const uint8_t* a;
  const uint8_t* b;
  const __half* scales;
  const __half* x;
  const __half* bias;
  __half* y;
};
Operands typed(const void* pa, const void* pb, const void* scales, const void* x, const void* bias, void* y) {
  return {static_cast<const uint8_t*>(pa), static_cast<const uint8_t*>(pb), static_cast<const __half*>(scales),
          static_cast<const __half*>(x), static_cast<const __half*>(bias), static_cast<__half*>(y)};
}

using Kernel = void (*)(const uint8_t*, const uint8_t*, const __half*, const __half*, const __half*, __half*, int,
                        int, int, int, int, int, float);
struct Entry {
  const char* name;
  Kernel fn;
};
#define EMU_ENTRIES(B)                                        \
  {"edgeinf_qgemm_w" #B "_pc", edgeinf_qgemm_w##B##_pc},      \
      {"edgeinf_qgemm_w" #B "_g128", edgeinf_qgemm_w##B##_g128}, \
      {"edgeinf_qgemm_w" #B "_g", edgeinf_qgemm_w##B##_g}
const Entry kEntries[] = {EMU_ENTRIES(2), EMU_ENTRIES(3), EMU_ENTRIES(4),
                          EMU_ENTRIES(5), EMU_ENTRIES(6), EMU_ENTRIES(8)};

#ifndef EMU_CLASSIC_ONLY
using StreamKernel = void (*)(const uint8_t*, const uint8_t*, const __half*, const __half*, const __half*, __half*,
                             float*, int*, int, int, int, int, int, int, float, int);
struct StreamEntry {
  const char* name;
  StreamKernel fn;
};
#define EMU_STREAM_M(B, S) \
  {"edgeinf_qstream_w" #B #S "_m8", edgeinf_qstream_w##B##S##_m8}, {"edgeinf_qstream_w" #B #S "_m16", edgeinf_qstream_w##B##S##_m16}
#define EMU_STREAM(B) EMU_STREAM_M(B, _pc), EMU_STREAM_M(B, _g128), EMU_STREAM_M(B, _g)
const StreamEntry kStream[] = {EMU_STREAM(2), EMU_STREAM(3), EMU_STREAM(4), EMU_STREAM(5), EMU_STREAM(6), EMU_STREAM(8)};

template <int B>
int ring_bytes(int ns) {
  using namespace edgeinf::stream;
  return ns == 0 ? RingBytes<B, 0>::value : ns == 2 ? RingBytes<B, 2>::value : RingBytes<B, 8>::value;
}

#endif
}  // namespace

#ifndef EMU_CLASSIC_ONLY
// The shared-memory ring of one warp of the streaming kernel (the host's launch geometry must agree).
extern "C" int emu_stream_ring_bytes(int bits, int ns) {
  switch (bits) {
    case 2: return ring_bytes<2>(ns);
    case 3: return ring_bytes<3>(ns);
    case 4: return ring_bytes<4>(ns);
    case 5: return ring_bytes<5>(ns);
    case 6: return ring_bytes<6>(ns);
    case 8: return ring_bytes<8>(ns);
    default: return -1;
  }
}
extern "C" int emu_stream_warps() { return edgeinf::stream::kWarps; }

// Launch streaming kernel `name` with `shared` bytes of dynamic shared memory, blocks in the order of
// `order_seed` (0: natural). Returns 0, or 1 with a one-line reason in err.
extern "C" int emu_qstream(const char* name, int gx, int gy, int gz, int bx, int by, int bz, int shared,
                           unsigned order_seed, const void* pa, const void* pb, const void* scales, const void* x,
                           const void* bias, void* y, void* ws, void* counters, int M, int N, int K, int nchunk,
                           int npad, int gsb, float out_mul, int slice_chunks, char* err, int errlen) {
  const StreamKernel fn = find_kernel<StreamKernel>(kStream, name);
  if (fn == nullptr) return report(std::string("no kernel named ") + name, err, errlen);
  const Operands o = typed(pa, pb, scales, x, bias, y);
  auto* w = static_cast<float*>(ws);
  auto* c = static_cast<int*>(counters);
  const std::string why =
      emu::launch({unsigned(gx), unsigned(gy), unsigned(gz)}, {unsigned(bx), unsigned(by), unsigned(bz)},
                  [=] { fn(o.a, o.b, o.scales, o.x, o.bias, o.y, w, c, M, N, K, nchunk, npad, gsb, out_mul, slice_chunks); },
                  1 << 17, static_cast<size_t>(shared), order_seed);
  return report(why, err, errlen);
}

#endif

// Checks of the cp.async model: mode 0 copies 16 bytes, commits, and reads the destination before
// and after waiting (out[0..3] before, out[4..7] after); mode 1 ends without waiting (an error).
extern "C" int emu_cp_async_selftest(int mode, unsigned* out, char* err, int errlen) {
  static const unsigned src[4] = {1u, 2u, 3u, 4u};
  const std::string why = emu::launch({1, 1, 1}, {1, 1, 1}, [=] {
    alignas(16) unsigned dst[4] = {0u, 0u, 0u, 0u};
    emu::cp_async(dst, src, 16);
    emu::cp_async_commit();
    if (mode == 1) return;
    std::memcpy(out, dst, 16);
    emu::cp_async_wait(0);
    std::memcpy(out + 4, dst, 16);
  });
  return report(why, err, errlen);
}

// Launch kernel `name` on grid (gx, gy, gz) x block (bx, by, bz) with the kernel's own arguments.
// Returns 0, or 1 with a one-line reason in err.
extern "C" int emu_qgemm(const char* name, int gx, int gy, int gz, int bx, int by, int bz, const void* pa,
                         const void* pb, const void* scales, const void* x, const void* bias, void* y, int M, int N,
                         int K, int nchunk, int npad, int gsb, float out_mul, char* err, int errlen) {
  const Kernel fn = find_kernel<Kernel>(kEntries, name);
  if (fn == nullptr) return report(std::string("no kernel named ") + name, err, errlen);
  const Operands o = typed(pa, pb, scales, x, bias, y);
  const std::string why =
      emu::launch({unsigned(gx), unsigned(gy), unsigned(gz)}, {unsigned(bx), unsigned(by), unsigned(bz)},
                  [=] { fn(o.a, o.b, o.scales, o.x, o.bias, o.y, M, N, K, nchunk, npad, gsb, out_mul); });
  return report(why, err, errlen);
}

// Checks of the emulator itself: mode 0 rotates values through a shuffle (out[i] = 100*blk + the
// next lane's id) and syncs the block; mode 1 leaves lane 0 out of a shuffle, which must be reported
// as a deadlock. Returns as emu_qgemm does.
extern "C" int emu_selftest(int mode, int* out, char* err, int errlen) {
  const std::string why = emu::launch({2, 1, 1}, {32, 2, 1}, [=] {
    const int tid = threadIdx.x + 32 * threadIdx.y;
    if (mode == 1 && tid == 0) return;
    const int next = __shfl_sync(0xffffffffu, tid, (threadIdx.x + 1) & 31);
    __syncthreads();
    out[blockIdx.x * 64 + tid] = 100 * blockIdx.x + next;
  });
  return report(why, err, errlen);
}
