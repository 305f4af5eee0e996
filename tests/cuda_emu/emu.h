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
//
// For the streaming kernel (qstream.cu): dynamic shared memory (one buffer per block, filled with
// 0xff bytes, a guard after it checked at the block's end), atomics and fences (plain operations:
// one fiber runs at a time), and cp.async as the latest-possible copy: a copy is deferred until a
// cp_async_wait leaves its group behind, and its destination reads 0xff bytes until then, so a
// wait that is one group short, or a stage reissued before it was consumed, changes the result.
// A thread that ends with copies not waited for fails the launch. Blocks can run in any order
// (a shuffled order checks that the result does not depend on which CTA arrives last).
#pragma once
#define EDGEINF_EMU 1
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <random>
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
inline long long min(long long a, long long b) { return a < b ? a : b; }

namespace emu {

struct Copy {
  void* dst;
  const void* src;
  size_t bytes;
};

struct Fiber {
  ucontext_t ctx;
  std::vector<Copy> open;                  // cp.async copies not yet committed
  std::deque<std::vector<Copy>> groups;    // committed groups, oldest first
  uint3 tid;
  int warp = 0, lane = 0;
  unsigned shuffles = 0;  // this lane's shuffles so far: their parity picks the exchange buffer
  bool done = false;
};

struct Block {
  dim3 grid{1, 1, 1}, dim{1, 1, 1};
  uint3 idx{0, 0, 0};
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;  // not zero-filled: fibers touch only what they use
  std::vector<int> warp_count, warp_gen, warp_size;
  std::vector<uint32_t> exchange;  // [warp][parity][lane]
  int block_count = 0, block_gen = 0;
  long events = 0;  // arrivals at barriers and fiber ends: the scheduler's progress measure
  int cur = 0;
  ucontext_t sched;
  std::function<void()> body;
  std::vector<unsigned char> shared;  // dynamic shared memory + guard
  size_t shared_bytes = 0;
  std::string error;                  // set by a thread that broke a rule; fails the launch
};
constexpr size_t kGuard = 64;
constexpr unsigned char kGuardByte = 0xa5;

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
  if (!self().open.empty() || !self().groups.empty())
    current()->error = "a thread ended with cp.async copies it never waited for";
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

inline unsigned char* dynamic_shared() { return current()->shared.data(); }

// cp.async: the destination is undefined (0xff) until a wait completes the copy's group.
inline void cp_async(void* dst, const void* src, size_t bytes) {
  std::memset(dst, 0xff, bytes);
  self().open.push_back({dst, src, bytes});
}
inline void cp_async_commit() {
  Fiber& f = self();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
inline void cp_async_wait(int pending) {
  Fiber& f = self();
  while (static_cast<int>(f.groups.size()) > pending) {
    for (const Copy& c : f.groups.front()) std::memcpy(c.dst, c.src, c.bytes);
    f.groups.pop_front();
  }
}

// Run `body` as every thread of every block of the grid; "" on success, else what went wrong.
// `shared_bytes` of dynamic shared memory per block; `order_seed` != 0 runs the blocks shuffled.
inline std::string launch(dim3 grid, dim3 dim, std::function<void()> body, size_t stack_bytes = 1 << 17,
                          size_t shared_bytes = 0, unsigned order_seed = 0) {
  Block b;
  b.grid = grid;
  b.dim = dim;
  b.body = std::move(body);
  const int n = static_cast<int>(dim.x * dim.y * dim.z), warps = (n + 31) / 32;
  if (n < 1 || n > 1024) return "block of " + std::to_string(n) + " threads (1..1024)";
  b.stacks.clear();
  for (int i = 0; i < n; ++i) b.stacks.emplace_back(new char[stack_bytes]);
  current() = &b;
  std::vector<uint3> order;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) order.push_back({bx, by, bz});
  if (order_seed) std::shuffle(order.begin(), order.end(), std::mt19937(order_seed));
  b.shared_bytes = shared_bytes;
  for (const uint3 idx : order) {
        const unsigned bx = idx.x, by = idx.y, bz = idx.z;
        b.idx = idx;
        b.shared.assign(shared_bytes + kGuard, 0xff);
        std::memset(b.shared.data() + shared_bytes, kGuardByte, kGuard);
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
          make_fiber(f.ctx, b.stacks[i].get(), stack_bytes, &b.sched);
        }
        const int stuck = run_block(b);
        const std::string where = " in block (" + std::to_string(bx) + "," + std::to_string(by) + "," + std::to_string(bz) + ")";
        if (stuck > 0) {
          current() = nullptr;
          return "deadlock" + where + ": " + std::to_string(stuck) + " threads wait at a barrier that the others never reach";
        }
        if (!b.error.empty()) {
          current() = nullptr;
          return b.error + where;
        }
        for (size_t i = 0; i < kGuard; ++i)
          if (b.shared[shared_bytes + i] != kGuardByte) {
            current() = nullptr;
            return "a write past the " + std::to_string(shared_bytes) + " bytes of dynamic shared memory" + where;
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

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "emu: __syncwarp with a partial mask is not emulated\n");
    std::abort();
  }
  emu::syncwarp();
}
inline void __threadfence() {}  // one fiber runs at a time: every write is already visible
inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }
inline float atomicExch(float* p, float v) { const float old = *p; *p = v; return old; }
inline int atomicExch(int* p, int v) { const int old = *p; *p = v; return old; }
