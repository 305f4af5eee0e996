// Host emulation of the CUDA features kernels/qgemm.cu uses, so that the kernel source itself runs
// on a CPU (g++, no GPU) in the tests.
//
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread; a round-robin scheduler
// resumes them. __shfl_sync and __syncthreads are barriers over the warp and the block; a round in
// which no fiber arrives at a barrier or ends is a deadlock (a lane missing from a collective) and
// fails the launch. __shared__ variables are function statics (one block runs at a time), fp16 is
// GCC's _Float16 (each operation rounds to fp16 as the hardware does). What this cannot show:
// inline PTX (the tensor-core MMA of sm_75+ and the streaming loads take their portable paths
// here: warp shuffles and plain loads, the code pre-Turing GPUs run), memory ordering and speed.
#pragma once
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static

typedef _Float16 __half;
struct half2 { __half x, y; };
typedef half2 __half2;
struct alignas(16) uint4 { uint32_t x, y, z, w; };
struct alignas(8) uint2 { uint32_t x, y; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };

inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
inline uint2 make_uint2(uint32_t x, uint32_t y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline __half __float2half(float f) { return static_cast<__half>(f); }  // round to nearest even
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }
inline float __half2float(__half h) { return static_cast<float>(h); }
inline float2 __half22float2(half2 h) { return {static_cast<float>(h.x), static_cast<float>(h.y)}; }
inline half2 __hsub2(half2 a, half2 b) {  // exact in float, then one rounding to fp16
  return {static_cast<__half>(static_cast<float>(a.x) - static_cast<float>(b.x)),
          static_cast<__half>(static_cast<float>(a.y) - static_cast<float>(b.y))};
}
inline half2 __hfma2(half2 a, half2 b, half2 c) {  // a*b+c with one rounding (exact in double)
  return {static_cast<__half>(static_cast<double>(a.x) * static_cast<double>(b.x) + static_cast<double>(c.x)),
          static_cast<__half>(static_cast<double>(a.y) * static_cast<double>(b.y) + static_cast<double>(c.y))};
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v ? __builtin_clz(static_cast<unsigned>(v)) : 32; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace emu {

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  int warp = 0, lane = 0;
  unsigned shuffles = 0;  // this lane's shuffles so far: their parity picks the exchange buffer
  bool done = false;
};

struct Block {
  dim3 grid{1, 1, 1}, dim{1, 1, 1};
  uint3 idx{0, 0, 0};
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  std::vector<int> warp_count, warp_gen, warp_size;
  std::vector<uint32_t> exchange;  // [warp][parity][lane]
  int block_count = 0, block_gen = 0;
  long events = 0;  // arrivals at barriers and fiber ends: the scheduler's progress measure
  int cur = 0;
  ucontext_t sched;
  std::function<void()> body;
};

inline Block*& current() {
  static Block* b = nullptr;
  return b;
}
inline Fiber& self() { return current()->fibers[current()->cur]; }
inline void yield() { Block* b = current(); swapcontext(&b->fibers[b->cur].ctx, &b->sched); }

// Wait until `size` fibers have arrived (count/gen belong to one warp or to the block).
inline void barrier(int& count, int& gen, int size) {
  Block* b = current();
  ++b->events;
  const int mine = gen;
  if (++count == size) {
    count = 0;
    ++gen;
    return;
  }
  while (gen == mine) yield();
}

inline void syncwarp() {
  Block* b = current();
  const int w = self().warp;
  barrier(b->warp_count[w], b->warp_gen[w], b->warp_size[w]);
}

inline void entry() {
  current()->body();
  self().done = true;
  ++current()->events;
}

// getcontext returns twice: kept in functions of their own so that no caller's locals are at risk.
__attribute__((noinline)) inline void make_fiber(ucontext_t& ctx, void* stack, size_t bytes, ucontext_t* link) {
  getcontext(&ctx);
  ctx.uc_stack.ss_sp = stack;
  ctx.uc_stack.ss_size = bytes;
  ctx.uc_link = link;
  makecontext(&ctx, entry, 0);
}

// Resume the block's fibers round-robin until all end; the number still alive at a deadlock, else 0.
__attribute__((noinline)) inline int run_block(Block& b) {
  const int n = static_cast<int>(b.fibers.size());
  for (;;) {
    const long before = b.events;
    int alive = 0;
    for (b.cur = 0; b.cur < n; ++b.cur) {
      if (b.fibers[b.cur].done) continue;
      swapcontext(&b.sched, &b.fibers[b.cur].ctx);
      alive += !b.fibers[b.cur].done;
    }
    if (alive == 0) return 0;
    if (b.events == before) return alive;
  }
}

// Run `body` as every thread of every block of the grid; "" on success, else what went wrong.
inline std::string launch(dim3 grid, dim3 dim, std::function<void()> body, size_t stack_bytes = 1 << 17) {
  Block b;
  b.grid = grid;
  b.dim = dim;
  b.body = std::move(body);
  const int n = static_cast<int>(dim.x * dim.y * dim.z), warps = (n + 31) / 32;
  if (n < 1 || n > 1024) return "block of " + std::to_string(n) + " threads (1..1024)";
  b.stacks.assign(n, std::vector<char>(stack_bytes));
  current() = &b;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        b.idx = {bx, by, bz};
        b.fibers.assign(n, Fiber{});
        b.warp_count.assign(warps, 0);
        b.warp_gen.assign(warps, 0);
        b.warp_size.assign(warps, 32);
        b.warp_size[warps - 1] = n - 32 * (warps - 1);
        b.exchange.assign(static_cast<size_t>(warps) * 64, 0u);
        b.block_count = b.block_gen = 0;
        for (int i = 0; i < n; ++i) {
          Fiber& f = b.fibers[i];
          f.tid = {static_cast<unsigned>(i % dim.x), static_cast<unsigned>(i / dim.x % dim.y),
                   static_cast<unsigned>(i / (dim.x * dim.y))};
          f.warp = i / 32;
          f.lane = i % 32;
          make_fiber(f.ctx, b.stacks[i].data(), stack_bytes, &b.sched);
        }
        const int stuck = run_block(b);
        if (stuck > 0) {
          current() = nullptr;
          return "deadlock in block (" + std::to_string(bx) + "," + std::to_string(by) + "," + std::to_string(bz) +
                 "): " + std::to_string(stuck) + " threads wait at a barrier that the others never reach";
        }
      }
  current() = nullptr;
  return "";
}

}  // namespace emu

#define threadIdx (::emu::self().tid)
#define blockIdx (::emu::current()->idx)
#define blockDim (::emu::current()->dim)
#define gridDim (::emu::current()->grid)

inline void __syncthreads() {
  emu::Block* b = emu::current();
  emu::barrier(b->block_count, b->block_gen, static_cast<int>(b->fibers.size()));
}

// Every lane of the warp must take part (the kernels only use full masks).
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src) {
  static_assert(sizeof(T) == 4, "32-bit shuffles only");
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "emu: __shfl_sync with a partial mask is not emulated\n");
    std::abort();
  }
  emu::Block* b = emu::current();
  emu::Fiber& f = emu::self();
  // Two buffers by parity: a lane can be at most one shuffle ahead of its warp, so the buffer it
  // writes next has been read by every lane already.
  uint32_t* buf = &b->exchange[(static_cast<size_t>(f.warp) * 2 + (f.shuffles++ & 1u)) * 32];
  std::memcpy(&buf[f.lane], &v, 4);
  emu::syncwarp();
  T out;
  std::memcpy(&out, &buf[src & 31], 4);
  return out;
}
