// The kernels of kernels/qgemm.cu, compiled for the host emulator (emu.h), behind one C entry
// point that tests/test_kernels_emulated.py calls through ctypes.
#include "emu.h"
#include "../../kernels/qgemm.cu"

namespace {

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

}  // namespace

// Launch kernel `name` on grid (gx, gy, gz) x block (bx, by, bz) with the kernel's own arguments.
// Returns 0, or 1 with a one-line reason in err.
extern "C" int emu_qgemm(const char* name, int gx, int gy, int gz, int bx, int by, int bz, const void* pa,
                         const void* pb, const void* scales, const void* x, const void* bias, void* y, int M, int N,
                         int K, int nchunk, int npad, int gsb, float out_mul, char* err, int errlen) {
  Kernel fn = nullptr;
  for (const Entry& e : kEntries)
    if (std::strcmp(e.name, name) == 0) fn = e.fn;
  std::string why;
  if (fn == nullptr) {
    why = std::string("no kernel named ") + name;
  } else {
    const auto* a = static_cast<const uint8_t*>(pa);
    const auto* b = static_cast<const uint8_t*>(pb);
    const auto* s = static_cast<const __half*>(scales);
    const auto* xx = static_cast<const __half*>(x);
    const auto* bi = static_cast<const __half*>(bias);
    auto* yy = static_cast<__half*>(y);
    why = emu::launch({unsigned(gx), unsigned(gy), unsigned(gz)}, {unsigned(bx), unsigned(by), unsigned(bz)},
                      [=] { fn(a, b, s, xx, bi, yy, M, N, K, nchunk, npad, gsb, out_mul); });
  }
  if (why.empty()) return 0;
  std::snprintf(err, static_cast<size_t>(errlen), "%s", why.c_str());
  return 1;
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
  if (why.empty()) return 0;
  std::snprintf(err, static_cast<size_t>(errlen), "%s", why.c_str());
  return 1;
}
