// The CUDA runtime calls vidlora makes, on the CPU (cuda_emu.hpp says what the emulation is and what it checks):
// device memory is host memory (tracked, so that copies and frees are checked against the allocations), work on a
// stream is queued until the host waits for it ("streams" below), a launch runs its blocks one after another and a
// block's threads as fibers.
#include "cuda_emu.hpp"
#include "../cuda_host/fiber_context.hpp"
#include "../cuda_host/ldmatrix_layout.hpp"

#include <cxxabi.h>
#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <vector>

struct CUstream_st {
  unsigned flags = 0;
  std::uint64_t last = 0;  // the newest operation queued on it (0: none yet)
  bool destroyed = false;  // cudaStreamDestroy'ed with work still queued: freed once that has run
};
struct CUevent_st {
  unsigned flags = 0;  // cudaEventCreateWithFlags's
  // Written when the record runs (shared with the queued record, which may outlive a destroyed event).
  std::shared_ptr<std::chrono::steady_clock::time_point> at = std::make_shared<std::chrono::steady_clock::time_point>();
  std::uint64_t op = 0;  // the queued record (0: never recorded)
};

namespace vidlora_emu {
namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "vidlora CUDA emulation: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// The emulated device.
struct Device {
  int cc = env_int("VIDLORA_EMU_CC", 75);
  int major() const { return cc / 10; }
  int minor() const { return cc % 10; }
  std::size_t optin_shared() const {
    if (cc >= 90) return 232448;              // 227 KiB
    if (cc == 80 || cc == 87) return 166912;  // 163 KiB
    if (cc >= 86) return 101376;              // 99 KiB
    return 65536;                             // sm_75: 64 KiB
  }
  std::size_t total_memory = static_cast<std::size_t>(env_int("VIDLORA_EMU_MEMORY_GB", 16)) << 30;
};
Device& device() {
  static Device d;
  return d;
}

// Allocations: device memory (cudaMalloc) and page-locked host memory (cudaMallocHost), which a kernel may also
// read on a GPU with unified addressing.
struct Allocation {
  std::size_t bytes;
  bool device;
};
struct Memory {
  std::mutex m;
  std::map<std::uintptr_t, Allocation> live;
  std::size_t device_bytes = 0;
};
Memory& memory() {
  static Memory mem;
  return mem;
}
// The allocation holding [p, p + n) (n >= 1), if there is one.
std::optional<Allocation> allocation_of(const void* p, std::size_t n) {
  Memory& mem = memory();
  std::lock_guard lock(mem.m);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = mem.live.upper_bound(a);
  if (it == mem.live.begin()) return std::nullopt;
  --it;
  if (a + n > it->first + it->second.bytes) return std::nullopt;
  return it->second;
}
bool is_device_pointer(const void* p) {
  const auto a = allocation_of(p, 1);
  return a && a->device;
}

// VIDLORA_EMU_REPORT=FILE: at exit, FILE gets one line per kernel launched ("launches <count> <kernel>", the kernel
// as its launch names it) and one with the warp-level mma.sync.m16n8k16 operations ("mma_m16n8k16 <count>"), so a
// test can see which path a program took (the register-tile attention on an sm_80+ device, say).
struct Report {
  std::mutex m;
  std::map<std::string, unsigned long long> launches;
  unsigned long long mma = 0;
  ~Report() {
    const char* path = std::getenv("VIDLORA_EMU_REPORT");
    if (!path || !*path) return;
    if (std::FILE* f = std::fopen(path, "w")) {
      for (const auto& [kernel, count] : launches) std::fprintf(f, "launches %llu %s\n", count, kernel.c_str());
      std::fprintf(f, "mma_m16n8k16 %llu\n", mma);
      std::fclose(f);
    }
  }
};
Report& report() {
  static Report r;
  return r;
}

thread_local cudaError_t last_error = cudaSuccess;
std::mutex attribute_mutex;
std::map<const void*, int> max_dynamic_shared;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel

// ---- fibers ---- (../cuda_host/fiber_context.hpp: a context switch of six registers on x86-64)
using vidlora::test::fiber::Context;
using vidlora::test::fiber::make_context;
using vidlora::test::fiber::switch_to;

// ---- race detection: VIDLORA_EMU_RACECHECK (the racecheck build: the tests compiled with -fsanitize=thread) ----
// Each CUDA thread is a ThreadSanitizer fiber, and the emulation tells ThreadSanitizer what orders their memory
// accesses on a GPU, and nothing else: a grid's threads start after what the host did before the grid ran and the
// host goes on after all of them; __syncthreads orders the block's threads and __syncwarp the warp's lanes (a shuffle
// or mma.sync exchanges registers, not memory: it orders nothing here); an atomic is atomic (relaxed: it orders
// nothing); a cp.async copy writes its destination at its issue and again when cp.async.wait_group completes it (it
// may land at any time between). Switching between fibers orders nothing (the scheduler's order is not a GPU's), so
// two threads that touch the same byte between the same two barriers, one of them writing, are a race that
// ThreadSanitizer reports with both stacks, whichever order the emulation ran them in.
// Blocks: those run at even positions are one set of fibers and those at odd positions another, each set with its own
// stacks and its own shared memory (ThreadSanitizer sees one thread of execution reuse its stack and its memory in
// program order), so any two neighbouring blocks are two sets of threads nothing orders, as on a GPU. A checked block
// starts after the same set's previous checked block (which used the same shared memory): what block k races with in
// block k + 2 is not found, what it races with in block k + 1 is. Only the first two and the last two blocks are
// checked unless VIDLORA_EMU_RACECHECK_BLOCKS=all (racecheck_every_block). The runtime itself is not instrumented, and
// what it does in a fiber's name (its locks, its allocations) is hidden from ThreadSanitizer: its bookkeeping is not
// the kernels'.
#ifdef VIDLORA_EMU_RACECHECK
extern "C" {
void* __tsan_get_current_fiber();
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_read16_pc(void* addr, void* pc);
void __tsan_write16_pc(void* addr, void* pc);
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
}
namespace race {
constexpr bool enabled = true;
constexpr unsigned kSwitchNoSync = 1;  // __tsan_switch_to_fiber_no_sync: a switch orders nothing
inline void* current_fiber() { return __tsan_get_current_fiber(); }
inline void switch_to_fiber(void* fiber) { __tsan_switch_to_fiber(fiber, kSwitchNoSync); }
inline void release(const void* token) { __tsan_release(const_cast<void*>(token)); }
inline void acquire(const void* token) { __tsan_acquire(const_cast<void*>(token)); }
// A 16-byte access the runtime makes for the kernel code at `pc` (the return address into it: the kernel's line in
// the report, where the runtime's own frame would hide it).
inline void read16(const void* p, void* pc) { __tsan_read16_pc(const_cast<void*>(p), pc); }
inline void write16(const void* p, void* pc) { __tsan_write16_pc(const_cast<void*>(p), pc); }
inline void name_fiber(void* fiber, const std::string& name) { __tsan_set_fiber_name(fiber, name.c_str()); }
inline void ignore_begin() { __tsan_ignore_thread_begin(); }
inline void ignore_end() { __tsan_ignore_thread_end(); }
inline void ignore_sync_begin() { AnnotateIgnoreSyncBegin(__FILE__, __LINE__); }
inline void ignore_sync_end() { AnnotateIgnoreSyncEnd(__FILE__, __LINE__); }
// A host thread's two sets of fibers (even and odd blocks), one per CUDA thread of the largest block so far.
struct FiberSets {
  std::vector<void*> sets[2];
  void* fiber(int set, std::size_t thread) {
    auto& s = sets[set];
    while (s.size() <= thread) s.push_back(__tsan_create_fiber(0));
    return s[thread];
  }
  FiberSets() = default;
  FiberSets(const FiberSets&) = delete;
  FiberSets& operator=(const FiberSets&) = delete;
  ~FiberSets() {
    for (auto& s : sets)
      for (void* f : s) __tsan_destroy_fiber(f);
  }
};
inline FiberSets& fiber_sets() {
  thread_local FiberSets sets;
  return sets;
}
}  // namespace race
#else
namespace race {
constexpr bool enabled = false;
inline void* current_fiber() { return nullptr; }
inline void switch_to_fiber(void*) {}
inline void release(const void*) {}
inline void acquire(const void*) {}
inline void read16(const void*, void*) {}
inline void write16(const void*, void*) {}
inline void ignore_begin() {}
inline void ignore_end() {}
inline void ignore_sync_begin() {}
inline void ignore_sync_end() {}
}  // namespace race
#endif
namespace race {
// While alive, the current fiber's (or the host's) memory accesses, allocations and synchronisation are hidden from
// ThreadSanitizer: the runtime's own work (poisoning shared memory, its tables and locks). Nothing otherwise.
struct Hidden {
  Hidden() {  // user-provided: a guard, never "unused"
    ignore_begin();
    ignore_sync_begin();
  }
  ~Hidden() {
    ignore_sync_end();
    ignore_end();
  }
  Hidden(const Hidden&) = delete;
  Hidden& operator=(const Hidden&) = delete;
};
}  // namespace race

constexpr std::size_t kStackBytes = 256 * 1024;

struct Barrier {
  int arrived = 0;
  unsigned generation = 0;
  int live = 0;
  // Racecheck: two synchronisation addresses (generation % 2) that arrivals release and departures acquire, new for
  // each block (its own allocation, so that ThreadSanitizer forgets them with the block).
  const char* token = nullptr;
};
struct WarpState {
  Barrier barrier;
  std::uint64_t slots[32] = {};
  std::uint32_t a[32][4] = {};
  std::uint32_t b[32][2] = {};
  float c[32][4] = {};
  unsigned mma_generation = ~0u;  // the barrier generation whose products are in c
  bool exited[32] = {};           // lanes whose thread has returned: a shuffle or mma reading them is an error
};
// A cp.async copy in flight: its 16 bytes as read (the source is global memory the kernel does not write) and where
// they go; `group` is the commit group (-1: not committed yet).
struct AsyncCopy {
  unsigned char* dst;
  unsigned char bytes[16];
  long group;
};
struct Fiber {
  Context context;
  void* race_fiber = nullptr;  // racecheck: this CUDA thread's ThreadSanitizer fiber
  ThreadState state;
  std::vector<AsyncCopy> copies;  // cp.async copies not complete
  long committed_groups = 0;
  bool done = false;
  const Barrier* waiting_on = nullptr;  // the barrier it waits at, until its generation moves past waiting_generation
  unsigned waiting_generation = 0;
};
struct BlockRun {
  Context scheduler;
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  Barrier block;
  Fiber* running = nullptr;
  void (*body)(void*) = nullptr;
  void* context = nullptr;
  bool checked = false;  // racecheck: this block's threads are checked (VIDLORA_EMU_RACECHECK_BLOCKS)
  int set = 0;           // racecheck: the set of fibers, stacks and shared memory of this block (0 or 1; else 0)
  int round = 0;  // racecheck: which of the set's two block-end addresses this block releases (the other it acquires)
  std::vector<unsigned char> shared_of_set[2];
  std::vector<unsigned char>* shared = &shared_of_set[0];  // dynamic shared memory (the set's)
  // The static shared arrays (VIDLORA_STATIC_SHARED) this block has reached: poisoned on the first reach.
  std::vector<std::pair<unsigned char*, std::size_t>> statics;
  int dynamic_attribute = -1;  // the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize, -1: not set
  const char* kernel = "";
  void* host_fiber = nullptr;  // racecheck: the host thread's own ThreadSanitizer fiber (the scheduler's)
  // Racecheck: the grid's synchronisation addresses: [0] the host's release before the grid, [1] every checked
  // thread's at its end, [2 + 2 * set + round] the set's threads' at their block's end, acquired at the start of the
  // set's next checked block (which releases the other round's: no block acquires what its own threads release).
  const char* grid_token = nullptr;
  // Racecheck: the token the running set's checked blocks release in `round` (grid_token + 2 + 2 * set + round).
  const char* set_token(int round) const { return grid_token + 2 + 2 * set + round; }
  std::uint64_t progress = 0;  // barrier arrivals and exits: a pass of the scheduler without any is a deadlock
  unsigned long long mma = 0;  // warp-level mma.sync operations, for the report
};
// VIDLORA_EMU_ORDER=reverse (else ascending): the order of blocks, of a block's threads between barriers, and of
// queued work that nothing orders (run_set).
// Whether environment variable `name` says `second`; else it is unset, empty or `first` (the default).
bool env_says(const char* name, const char* first, const char* second) {
  const char* v = std::getenv(name);
  const std::string value = v ? v : "";
  if (!value.empty() && value != first && value != second)
    fail(std::string(name) + "='" + value + "': not '" + first + "' (the default) or '" + second + "'");
  return value == second;
}
bool reverse_order() {
  static const bool reverse = env_says("VIDLORA_EMU_ORDER", "ascending", "reverse");
  return reverse;
}
// Racecheck: VIDLORA_EMU_RACECHECK_BLOCKS=all checks every block of a grid; by default (edges) the first two and the
// last two that run (the first and last blocks of the grid, whose tiles are partial where any are), the others
// running unchecked: a barrier costs ThreadSanitizer a vector-clock operation per thread over every fiber it knows,
// which made the [decoder] tests run past 20 minutes with every block checked (230 s with the edges).
bool racecheck_every_block() {
  static const bool all = env_says("VIDLORA_EMU_RACECHECK_BLOCKS", "edges", "all");
  return all;
}

thread_local BlockRun* run = nullptr;
thread_local ThreadState host_state;  // what threadIdx reads outside a kernel (never meant to)

// The running fiber goes back to the scheduler (and ThreadSanitizer's current fiber with it).
void to_scheduler(Fiber& f) {
  race::switch_to_fiber(run->host_fiber);
  switch_to(f.context, run->scheduler);
}

void yield_waiting(const Barrier& b, unsigned generation) {
  Fiber* f = run->running;
  f->waiting_on = &b;
  f->waiting_generation = generation;
  to_scheduler(*f);
}

// A barrier: `orders_memory` for __syncthreads and __syncwarp (racecheck: what a thread wrote before it, the others
// may read after it); a shuffle or mma.sync waits the same way but orders no memory.
void wait(Barrier& b, bool orders_memory) {
  ++run->progress;
  const unsigned g = b.generation;
  const char* token = b.token ? b.token + g % 2 : nullptr;
  if (orders_memory && token) race::release(token);
  if (++b.arrived >= b.live) {
    b.arrived = 0;
    ++b.generation;
    // The thread that opens the barrier goes back to the scheduler too, so that after every barrier the threads run
    // on in the scheduler's order (ascending or reverse), not the opener first.
    Fiber* f = run->running;
    f->waiting_on = nullptr;
    to_scheduler(*f);
  } else {
    while (b.generation == g) yield_waiting(b, g);
  }
  if (orders_memory && token) race::acquire(token);
}

void leave(Barrier& b) {
  --b.live;
  if (b.arrived > 0 && b.arrived >= b.live) {
    b.arrived = 0;
    ++b.generation;
  }
}

int linear(const ThreadState& s) {
  return static_cast<int>(s.thread.x + s.block_dim.x * (s.thread.y + s.block_dim.y * s.thread.z));
}

[[noreturn]] void fiber_entry() {
  Fiber* f = run->running;
  if (run->checked) {
    race::acquire(run->grid_token);                 // after what the host did before the grid
    race::acquire(run->set_token(1 - run->round));  // and after the set's previous block
  } else if (race::enabled) {
    race::ignore_begin();  // a block the racecheck leaves out: its accesses unseen
  }
  run->body(run->context);
  if (!f->copies.empty())
    fail(std::string("a thread of ") + run->kernel + " returned with " + std::to_string(f->copies.size()) +
         " cp.async copies not waited for (cp.async.wait_group)");
  f->done = true;
  ++run->progress;
  leave(run->block);
  WarpState& w = run->warps[static_cast<std::size_t>(linear(f->state) / 32)];
  w.exited[linear(f->state) % 32] = true;
  leave(w.barrier);
  if (run->checked) {
    race::release(run->grid_token + 1);  // before what the host does after the grid
    race::release(run->set_token(run->round));
  } else if (race::enabled) {
    race::ignore_end();
  }
  to_scheduler(*f);
  std::abort();  // a finished fiber is never resumed
}

}  // namespace

ThreadState& current() { return run && run->running ? run->running->state : host_state; }

namespace {
// Whether [p, p + bytes) lies inside the running block's dynamic shared memory or one of its static shared arrays.
bool in_block_shared(const void* p, std::size_t bytes) {
  const auto* at = static_cast<const unsigned char*>(p);
  const auto inside = [at, bytes](const unsigned char* begin, std::size_t size) {
    return at >= begin && at + bytes <= begin + size;
  };
  bool shared = inside(run->shared->data(), run->shared->size());
  for (const auto& [begin, size] : run->statics) shared = shared || inside(begin, size);
  return shared;
}
}  // namespace

void cp_async_16(void* shared_dst, const void* global_src, bool valid) {
  if (!run || !run->running) fail("cp.async outside a kernel");
  auto* dst = static_cast<unsigned char*>(shared_dst);
  AsyncCopy c{dst, {}, -1};
  const bool in_flight = device().cc >= 80;  // no cp.async before sm_80: the copy is done here, at its issue
  {
    const race::Hidden hidden;  // the checks' lock and the list's allocations are the runtime's, not the kernel's
    // cp.async.cg of 16 bytes: both addresses 16-byte aligned, the destination's 16 bytes inside the block's dynamic
    // shared memory or one of its static shared arrays.
    if (reinterpret_cast<std::uintptr_t>(dst) % 16 != 0 ||
        (valid && reinterpret_cast<std::uintptr_t>(global_src) % 16 != 0))
      fail(std::string("cp.async in ") + run->kernel + ": a 16-byte copy from or to an address not 16-byte aligned");
    if (!in_block_shared(dst, 16))
      fail(std::string("cp.async in ") + run->kernel +
           (in_device_memory(dst, 1) ? ": the destination is global memory, not shared memory"
                                     : ": the destination's 16 bytes are not inside the block's shared memory"));
    if (valid) {
      if (!in_device_memory(global_src, 16))
        fail(std::string("cp.async in ") + run->kernel + " reads 16 bytes outside device memory");
      std::memcpy(c.bytes, global_src, 16);
    }
    if (in_flight) {
      std::memset(dst, 0xff, 16);  // undefined until the copy completes
      run->running->copies.push_back(c);
    }
  }
  void* const caller = __builtin_return_address(0);
  if (valid) race::read16(global_src, caller);  // the copy reads its source when issued
  // and may write its destination at any time from now to the wait that completes it: a write here and at the wait
  race::write16(dst, caller);
  if (!in_flight) std::memcpy(dst, c.bytes, 16);
}
void cp_async_commit() {
  if (!run || !run->running) fail("cp.async.commit_group outside a kernel");
  Fiber& f = *run->running;
  for (auto& c : f.copies)
    if (c.group < 0) c.group = f.committed_groups;
  ++f.committed_groups;  // an empty group is a group too
}
void cp_async_wait(int pending_groups) {
  if (!run || !run->running) fail("cp.async.wait_group outside a kernel");
  Fiber& f = *run->running;
  // Every committed group but the newest `pending_groups` completes; copies not committed stay in flight.
  const long complete_below = f.committed_groups - pending_groups;
  void* const caller = __builtin_return_address(0);
  std::erase_if(f.copies, [&](const AsyncCopy& c) {
    if (c.group < 0 || c.group >= complete_below) return false;
    race::write16(c.dst, caller);  // the copy's write lands by the wait (the issuing thread's, as the PTX ISA has it)
    std::memcpy(c.dst, c.bytes, 16);
    return true;
  });
}

void* static_shared(const void* key, std::size_t bytes, std::size_t alignment) {
  if (!run || !run->running) fail("a static shared array outside a kernel");
  const race::Hidden hidden;  // the storage's allocation and poisoning are the runtime's, not the block's
  // Each array (its key: a static of the declaring function) has heap storage of its own size per host thread (and
  // per set of blocks in the racecheck build), so that AddressSanitizer sees an access past its end; reused by the
  // thread's later blocks, poisoned for each.
  struct Storage {
    unsigned char* p = nullptr;
    std::size_t bytes = 0, alignment = 0;
    ~Storage() {
      if (p) ::operator delete[](p, std::align_val_t(alignment));
    }
  };
  thread_local std::map<std::pair<const void*, int>, Storage> arrays;
  Storage& a = arrays[{key, run->set}];
  if (!a.p) {
    a.p = static_cast<unsigned char*>(::operator new[](bytes, std::align_val_t(alignment)));
    a.bytes = bytes;
    a.alignment = alignment;
  }
  for (const auto& st : run->statics)
    if (st.first == a.p) return a.p;
  std::memset(a.p, 0xff, bytes);  // the block's first reach: what it holds on a GPU is not ours
  run->statics.emplace_back(a.p, bytes);
  // What a GPU allows a block: 48 KiB of static shared memory (ptxas refuses more); static and dynamic together
  // within 48 KiB, or with cudaFuncAttributeMaxDynamicSharedMemorySize set, static and that attribute within the card's
  // opt-in maximum (cudaFuncSetAttribute refuses more). Checked when the block reaches its arrays, which is when the
  // emulation learns their sizes.
  std::size_t statics = 0;
  for (const auto& st : run->statics) statics += st.second;
  const std::string sizes = std::string(run->kernel) + ": " + std::to_string(statics) + " bytes of static and " +
                            std::to_string(run->shared->size()) + " of dynamic shared memory";
  if (statics > 48 * 1024)
    fail(std::string(run->kernel) + ": " + std::to_string(statics) +
         " bytes of static shared memory, above the 48 KiB a block may declare");
  if (run->dynamic_attribute < 0 && statics + run->shared->size() > 48 * 1024)
    fail(sizes + ", above the 48 KiB a block has without cudaFuncAttributeMaxDynamicSharedMemorySize");
  if (run->dynamic_attribute >= 0 &&
      statics + static_cast<std::size_t>(run->dynamic_attribute) > device().optin_shared())
    fail(sizes + ": with cudaFuncAttributeMaxDynamicSharedMemorySize " + std::to_string(run->dynamic_attribute) +
         ", above the " + std::to_string(device().optin_shared()) +
         " a block may have on this card (a GPU refuses the attribute)");
  return a.p;
}

void* dynamic_shared() {
  if (!run) fail("dynamic shared memory outside a kernel");
  return run->shared->data();
}

bool in_device_memory(const void* p, std::size_t bytes) { return allocation_of(p, bytes ? bytes : 1).has_value(); }
bool device_address(const void* p) {
  if (in_device_memory(p, 1)) return true;
  // p just past an allocation's last byte: the byte before it is the allocation's (and p itself is not)
  return allocation_of(static_cast<const unsigned char*>(p) - 1, 1).has_value();
}

void fail_pointer_argument(const void* p, int index, const char* kernel, int member, const char* type,
                           const char* argument) {
  std::string where = std::string(argument) + " " + std::to_string(index);
  if (member >= 0) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(type, nullptr, nullptr, &status);
    where = "member " + std::to_string(member) + " (counted from 0) of " + (status == 0 ? demangled : type) + " in " +
            where;
    std::free(demangled);
  }
  fail(where + " of " + kernel + " points outside device memory (" +
       std::to_string(reinterpret_cast<std::uintptr_t>(p)) + ")");
}

void sync_warp() {
  if (!run || !run->running) fail("__syncwarp outside a kernel");
  wait(run->warps[static_cast<std::size_t>(linear(run->running->state) / 32)].barrier, true);
}

void sync_threads() {
  if (!run || !run->running) fail("__syncthreads outside a kernel");
  wait(run->block, true);
}

std::uint64_t warp_exchange(std::uint64_t value, int source_lane) {
  if (!run || !run->running) fail("a warp shuffle outside a kernel");
  const int me = linear(run->running->state);
  WarpState& w = run->warps[static_cast<std::size_t>(me / 32)];
  w.slots[me % 32] = value;
  wait(w.barrier, false);
  const int lanes =
      static_cast<int>(std::min<std::size_t>(32, run->fibers.size() - static_cast<std::size_t>(me / 32) * 32));
  if (source_lane < 0 || source_lane >= lanes)
    fail(std::string("a shuffle from lane ") + std::to_string(source_lane) + " of a warp of " + std::to_string(lanes) +
         " in " + run->kernel);
  if (w.exited[source_lane])
    fail(std::string("a shuffle reads lane ") + std::to_string(source_lane) + ", which has returned, in " +
         run->kernel);
  const std::uint64_t r = w.slots[source_lane];
  wait(w.barrier, false);
  return r;
}

void warp_mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2], bool bf16) {
  if (!run || !run->running) fail("mma.sync outside a kernel");
  const int me = linear(run->running->state);
  WarpState& w = run->warps[static_cast<std::size_t>(me / 32)];
  const int lane = me % 32;
  if (w.barrier.live != 32) fail(std::string("mma.sync in a warp of fewer than 32 threads in ") + run->kernel);
  for (int i = 0; i < 4; ++i) {
    w.a[lane][i] = a[i];
    w.c[lane][i] = c[i];
  }
  w.b[lane][0] = b[0];
  w.b[lane][1] = b[1];
  if (lane == 0) ++run->mma;  // added to the report by the host after the grid (a lock here would order the fibers)
  wait(w.barrier, false);
  for (int l = 0; l < 32; ++l)
    if (w.exited[l]) fail(std::string("mma.sync with lane ") + std::to_string(l) + " returned, in " + run->kernel);
  // The first lane through computes every lane's accumulators (the whole tiles once); the others read theirs.
  if (w.mma_generation != w.barrier.generation) {
    w.mma_generation = w.barrier.generation;
    static const std::vector<float> from_fp16 = [] {  // every fp16 pattern's value
      std::vector<float> t(65536);
      for (std::uint32_t i = 0; i < 65536; ++i) {
        __half_raw raw;
        raw.x = static_cast<unsigned short>(i);
        t[i] = __half2float(__half(raw));
      }
      return t;
    }();
    auto widen = [bf16](std::uint32_t word, int half) {
      const auto bits = static_cast<std::uint16_t>(half ? word >> 16 : word & 0xffffu);
      if (bf16) {
        const std::uint32_t f = static_cast<std::uint32_t>(bits) << 16;
        float x;
        std::memcpy(&x, &f, 4);
        return x;
      }
      return from_fp16[bits];
    };
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
      const int group = l >> 2, in_group = l % 4;
      for (int i = 0; i < 8; ++i) {  // a_i: register i / 2, half i % 2
        const int row = (i % 4) < 2 ? group : group + 8;
        const int col = in_group * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = widen(w.a[l][i / 2], i % 2);
      }
      for (int i = 0; i < 4; ++i) {  // b_i: register i / 2, half i % 2
        const int k = in_group * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        B[k][group] = widen(w.b[l][i / 2], i % 2);
      }
    }
    float C[16][8];
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) C[i < 2 ? (l >> 2) : (l >> 2) + 8][(l % 4) * 2 + (i & 1)] = w.c[l][i];  // c_i
    for (int row = 0; row < 16; ++row)  // each output summed in k order; the 8 columns side by side
      for (int k = 0; k < 16; ++k)
        for (int col = 0; col < 8; ++col) C[row][col] += A[row][k] * B[k][col];
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) w.c[l][i] = C[i < 2 ? (l >> 2) : (l >> 2) + 8][(l % 4) * 2 + (i & 1)];
  }
  for (int i = 0; i < 4; ++i) c[i] = w.c[lane][i];
  wait(w.barrier, false);
}

void warp_ldmatrix_x4(std::uint32_t (&r)[4], const void* row, bool trans) {
  if (!run || !run->running) fail("ldmatrix outside a kernel");
  const int me = linear(run->running->state);
  WarpState& w = run->warps[static_cast<std::size_t>(me / 32)];
  const int lane = me % 32;
  if (w.barrier.live != 32) fail(std::string("ldmatrix in a warp of fewer than 32 threads in ") + run->kernel);
  {
    const race::Hidden hidden;  // the checks' lock is the runtime's
    // Each lane's row: 16 bytes, 16-byte aligned, inside the block's shared memory (.shared state space).
    if (reinterpret_cast<std::uintptr_t>(row) % 16 != 0)
      fail(std::string("ldmatrix in ") + run->kernel + ": lane " + std::to_string(lane) +
           "'s row address is not 16-byte aligned");
    if (!in_block_shared(row, 16))
      fail(std::string("ldmatrix in ") + run->kernel + ": lane " + std::to_string(lane) + "'s row " +
           (in_device_memory(row, 1) ? "is in global memory, not shared memory"
                                     : "is not inside the block's shared memory"));
  }
  race::read16(row, __builtin_return_address(0));  // the row this lane addresses, read by the warp's load
  w.slots[lane] = reinterpret_cast<std::uintptr_t>(row);
  wait(w.barrier, false);
  const void* rows[32];
  for (int l = 0; l < 32; ++l) {
    if (w.exited[l]) fail(std::string("ldmatrix with lane ") + std::to_string(l) + " returned, in " + run->kernel);
    rows[l] = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(w.slots[l]));
  }
  for (int i = 0; i < 4; ++i) r[i] = vidlora::test::ldmatrix_register(rows, lane, i, trans);
  wait(w.barrier, false);
}

bool begin_launch(LaunchConfig& c, const void* kernel, const char* name) {
  auto refuse = [&](cudaError_t e, const std::string& why) {
    std::fprintf(stderr, "vidlora CUDA emulation: launch of %s refused: %s\n", name, why.c_str());
    last_error = e;
    return false;
  };
  const unsigned long long threads = 1ull * c.block.x * c.block.y * c.block.z;
  if (threads == 0 || threads > 1024 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64)
    return refuse(cudaErrorInvalidConfiguration, "block of " + std::to_string(c.block.x) + "x" +
                                                     std::to_string(c.block.y) + "x" + std::to_string(c.block.z));
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 2147483647u || c.grid.y > 65535 || c.grid.z > 65535)
    return refuse(cudaErrorInvalidConfiguration, "grid of " + std::to_string(c.grid.x) + "x" +
                                                     std::to_string(c.grid.y) + "x" + std::to_string(c.grid.z));
  std::size_t allowed = 48 * 1024;
  {
    std::lock_guard lock(attribute_mutex);
    if (auto it = max_dynamic_shared.find(kernel); it != max_dynamic_shared.end()) {
      allowed = static_cast<std::size_t>(it->second);
      c.dynamic_attribute = it->second;
    }
  }
  if (c.shared_bytes > allowed)
    return refuse(cudaErrorInvalidValue, std::to_string(c.shared_bytes) + " bytes of dynamic shared memory, " +
                                             std::to_string(allowed) +
                                             " allowed (cudaFuncAttributeMaxDynamicSharedMemorySize)");
  return true;
}

void run_grid(const LaunchConfig& c, const char* name, void (*body)(void*), void* context) {
  if (run) fail("a kernel launched from a kernel");
  {
    Report& r = report();
    std::lock_guard lock(r.m);
    ++r.launches[name];
  }
  const std::size_t threads = static_cast<std::size_t>(c.block.x) * c.block.y * c.block.z;
  BlockRun r;
  r.kernel = name;
  r.dynamic_attribute = c.dynamic_attribute;
  r.body = body;
  r.context = context;
  r.fibers.resize(threads);
  r.warps.resize((threads + 31) / 32);
  // Kept between launches; racecheck: a second set for the odd blocks' fibers.
  static thread_local std::vector<std::unique_ptr<char[]>> stacks[2];
  for (auto& set : stacks) {
    while (set.size() < threads) set.push_back(std::make_unique<char[]>(kStackBytes));
    if (!race::enabled) break;
  }
  // Racecheck: the grid's synchronisation addresses (its own allocation: ThreadSanitizer forgets them when it is
  // freed, so nothing orders this grid after another's threads but the host's waits).
  std::unique_ptr<char[]> grid_token;
  if (race::enabled) {
    grid_token = std::make_unique<char[]>(6);
    r.grid_token = grid_token.get();
    r.host_fiber = race::current_fiber();
    race::release(r.grid_token);
  }
  run = &r;
  // VIDLORA_EMU_ORDER=reverse: the blocks from the last to the first, and a block's threads from the last to the first
  // between barriers (a GPU promises neither order): what a thread reads from another's write without a barrier
  // between them, or a block from another block, shows in one of the two orders.
  const bool reverse = reverse_order();
  const unsigned long long blocks = 1ull * c.grid.x * c.grid.y * c.grid.z;
  unsigned long long checked_blocks[2] = {0, 0};  // racecheck: per set, its checked blocks so far
  for (unsigned long long i = 0; i < blocks; ++i) {
    const unsigned long long b = reverse ? blocks - 1 - i : i;
    const auto bx = static_cast<unsigned>(b % c.grid.x);
    const auto by = static_cast<unsigned>(b / c.grid.x % c.grid.y);
    const auto bz = static_cast<unsigned>(b / (1ull * c.grid.x * c.grid.y));
    const int set = race::enabled ? static_cast<int>(i % 2) : 0;  // racecheck: the even and the odd blocks' sets
    r.set = set;
    r.checked = race::enabled && (i < 2 || i + 2 >= blocks || racecheck_every_block());
    if (r.checked) r.round = static_cast<int>(checked_blocks[set]++ % 2);
    r.shared = &r.shared_of_set[set];
    {
      // Shared memory starts as garbage on a GPU: NaN patterns here (the static arrays when the block first reaches
      // them); the poisoning is the runtime's (racecheck: hidden, the block's threads are ordered after it).
      const race::Hidden hidden;
      r.shared->assign(c.shared_bytes, 0xff);
    }
    r.statics.clear();
    // Racecheck: the block's barriers' synchronisation addresses, two per barrier, new for each block.
    std::unique_ptr<char[]> barrier_tokens;
    if (r.checked) barrier_tokens = std::make_unique<char[]>(2 * (1 + r.warps.size()));
    r.block = {0, 0, static_cast<int>(threads), barrier_tokens.get()};
    for (std::size_t w = 0; w < r.warps.size(); ++w) {
      r.warps[w] = WarpState{};  // every block's warps start afresh (the mma generation with their barrier)
      r.warps[w].barrier = {0, 0, static_cast<int>(std::min<std::size_t>(32, threads - w * 32)),
                            r.checked ? barrier_tokens.get() + 2 * (1 + w) : nullptr};
    }
    std::size_t t = 0;
    for (unsigned tz = 0; tz < c.block.z; ++tz)
      for (unsigned ty = 0; ty < c.block.y; ++ty)
        for (unsigned tx = 0; tx < c.block.x; ++tx, ++t) {
          Fiber& f = r.fibers[t];
          f.done = false;
          f.waiting_on = nullptr;
          f.copies.clear();
          f.committed_groups = 0;
          f.state = {{tx, ty, tz}, {bx, by, bz}, c.block, c.grid};
          make_context(f.context, stacks[race::enabled ? set : 0][t].get(), kStackBytes, fiber_entry);
#ifdef VIDLORA_EMU_RACECHECK
          f.race_fiber = race::fiber_sets().fiber(set, t);
          // A report prints a fiber's name as it is then: the block of an earlier access may be older.
          if (r.checked)
            race::name_fiber(f.race_fiber, std::string(name) + " thread (" + std::to_string(tx) + ", " +
                                               std::to_string(ty) + ", " + std::to_string(tz) + ") of fiber set " +
                                               std::to_string(set) + ", latest block (" + std::to_string(bx) + ", " +
                                               std::to_string(by) + ", " + std::to_string(bz) + ")");
#endif
        }
    std::size_t done = 0;
    while (done < threads) {
      const std::uint64_t before = r.progress;
      for (std::size_t k = 0; k < threads; ++k) {
        Fiber& f = r.fibers[reverse ? threads - 1 - k : k];
        if (f.done) continue;
        if (f.waiting_on && f.waiting_on->generation == f.waiting_generation) continue;  // still closed
        f.waiting_on = nullptr;
        r.running = &f;
        race::switch_to_fiber(f.race_fiber);
        switch_to(r.scheduler, f.context);
        r.running = nullptr;
        if (f.done) ++done;
      }
      const bool progressed = r.progress != before;
      if (!progressed) {
        // Every fiber left waits at a barrier that cannot open: some thread of the block or warp never reaches it.
        std::size_t waiting = 0;
        for (auto& f : r.fibers) waiting += f.done ? 0 : 1;
        fail(std::string("deadlock in ") + r.kernel + ": block (" + std::to_string(bx) + ", " + std::to_string(by) +
             ", " + std::to_string(bz) + "), " + std::to_string(waiting) + " of " + std::to_string(threads) +
             " threads wait at a __syncthreads or shuffle the others never reach");
      }
    }
  }
  if (race::enabled) race::acquire(r.grid_token + 1);
  run = nullptr;
  if (r.mma) {
    Report& rep = report();
    std::lock_guard lock(rep.m);
    rep.mma += r.mma;
  }
}

// ---- streams: work is queued, and runs when the host waits for it ----
// A GPU runs a stream's work after the call that queued it returns, in the stream's order, ordered with other streams
// only as CUDA says: the legacy default stream (0) waits for every blocking stream's earlier work and they for its;
// a stream created with cudaStreamNonBlocking waits for neither; cudaStreamWaitEvent orders a stream after an event's
// record. VIDLORA_EMU_STREAMS=deferred (the default) keeps the work queued until the host waits for it (a stream or
// event synchronize, cudaDeviceSynchronize, a copy into pageable memory or a synchronous one to or from page-locked
// memory, cudaFree and cudaFreeHost), then runs what that wait covers and
// nothing else, so code that reads a result it did not wait for (a device buffer through a copy on another stream, a
// pinned buffer before its stream's synchronize) reads what the memory held before: 0xFF bytes for memory fresh from
// cudaMalloc. VIDLORA_EMU_STREAMS=eager runs each piece of work as it is queued (what the emulation did before).
namespace {
struct Op {
  std::function<void()> work;
  std::vector<std::uint64_t> after;  // the operations it waits for (all queued before it)
};
struct Queue {
  std::recursive_mutex m;
  std::map<std::uint64_t, Op> pending;  // by id: ids grow, so an operation's predecessors have smaller ids
  std::uint64_t next = 1;
  std::uint64_t legacy_last = 0;        // the legacy default stream's newest operation
  std::set<CUstream_st*> blocking;      // streams without cudaStreamNonBlocking (destroyed ones with work queued too)
  std::vector<CUstream_st*> destroyed;  // destroyed streams whose work has not all run
};
Queue& queue() {
  static Queue* q = new Queue;  // never destroyed: work still queued at exit is dropped, as a GPU's would be
  return *q;
}
bool eager() {
  static const bool e = env_says("VIDLORA_EMU_STREAMS", "deferred", "eager");
  return e;
}
// The stream's state, null for the legacy default stream.
CUstream_st* stream_of(cudaStream_t s) {
  if (s == cudaStreamPerThread) fail("cudaStreamPerThread (the per-thread default stream) is not emulated");
  return s == cudaStreamLegacy ? nullptr : s;
}
void forget_destroyed(Queue& q) {
  std::erase_if(q.destroyed, [&](CUstream_st* s) {
    if (q.pending.count(s->last)) return false;
    q.blocking.erase(s);
    delete s;
    return true;
  });
}
// Runs the queued operations of `needed` (each of whose waits is in it, or has run), each once every operation it
// waits for has: of those ready, the oldest first, or with VIDLORA_EMU_ORDER=reverse the newest first, so that work
// of two streams nothing orders runs in one order in the ascending runs and in the other in the reverse ones (a GPU
// promises neither): a read of another stream's write without an event between them shows in one of the two.
void run_set(Queue& q, const std::set<std::uint64_t>& needed) {
  std::map<std::uint64_t, int> waiting;                           // per operation: its waits not yet run
  std::map<std::uint64_t, std::vector<std::uint64_t>> followers;  // per operation: those of `needed` that wait for it
  std::set<std::uint64_t> ready;
  for (std::uint64_t x : needed) {
    int n = 0;
    for (std::uint64_t a : q.pending.at(x).after)
      if (needed.count(a)) {
        ++n;
        followers[a].push_back(x);
      }
    waiting[x] = n;
    if (n == 0) ready.insert(x);
  }
  while (!ready.empty()) {
    const auto pick = reverse_order() ? std::prev(ready.end()) : ready.begin();
    const std::uint64_t x = *pick;
    ready.erase(pick);
    auto it = q.pending.find(x);
    std::function<void()> work = std::move(it->second.work);
    q.pending.erase(it);
    try {
      work();
    } catch (const std::exception& e) {
      fail(std::string("queued work threw: ") + e.what());
    }
    for (std::uint64_t f : followers[x])
      if (--waiting[f] == 0) ready.insert(f);
  }
  forget_destroyed(q);
}
// Runs operation `id` (if still queued) and every queued operation it waits for, directly or not.
void run_through(std::uint64_t id) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  if (!q.pending.count(id)) return;
  std::set<std::uint64_t> needed;
  std::vector<std::uint64_t> stack{id};
  while (!stack.empty()) {
    const std::uint64_t x = stack.back();
    stack.pop_back();
    auto it = q.pending.find(x);
    if (it == q.pending.end() || !needed.insert(x).second) continue;
    for (std::uint64_t a : it->second.after) stack.push_back(a);
  }
  run_set(q, needed);
}
void run_all() {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  std::set<std::uint64_t> all;
  for (const auto& [id, op] : q.pending) all.insert(id);
  run_set(q, all);
}
}  // namespace

std::uint64_t enqueue(cudaStream_t stream, std::function<void()> work, std::uint64_t also_after,
                      std::uint64_t* id_into) {
  Queue& q = queue();
  std::uint64_t id = 0;
  {
    std::lock_guard lock(q.m);
    CUstream_st* s = stream_of(stream);
    Op op{std::move(work), {}};
    auto after = [&](std::uint64_t x) {
      if (x && q.pending.count(x)) op.after.push_back(x);
    };
    if (!s) {
      after(q.legacy_last);
      for (CUstream_st* b : q.blocking) after(b->last);
    } else {
      if (s->destroyed) fail("work queued on a destroyed stream");
      after(s->last);
      if (!(s->flags & cudaStreamNonBlocking)) after(q.legacy_last);
    }
    after(also_after);
    id = q.next++;
    (s ? s->last : q.legacy_last) = id;
    if (id_into) *id_into = id;  // under the lock: another host thread may read it (an event's record)
    q.pending.emplace(id, std::move(op));
  }
  if (eager()) run_through(id);
  return id;
}
void wait_for(std::uint64_t id) { run_through(id); }
void wait_for_all() { run_all(); }
bool is_queued(std::uint64_t id) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  return q.pending.count(id) != 0;
}
bool run_if_queued(std::uint64_t id) {
  if (!is_queued(id)) return false;
  run_through(id);
  return true;
}
std::uint64_t newest_on(cudaStream_t stream) {
  CUstream_st* s = stream_of(stream);
  if (s) {
    Queue& q = queue();
    std::lock_guard lock(q.m);
    return s->last;
  }
  // The legacy stream's newest work with the blocking streams' earlier work (what an operation there waits for).
  return enqueue(stream, [] {});
}
bool run_queued_on(cudaStream_t stream) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  CUstream_st* s = stream_of(stream);
  std::vector<std::uint64_t> newest{s ? s->last : q.legacy_last};
  if (!s)
    for (CUstream_st* b : q.blocking) newest.push_back(b->last);
  bool any = false;
  for (std::uint64_t id : newest)
    if (q.pending.count(id)) {
      any = true;
      run_through(id);
    }
  return any;
}
std::uint64_t event_op(const CUevent_st* e) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  return e->op;
}
void track_blocking_stream(CUstream_st* s) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  q.blocking.insert(s);
}
void destroy_stream(CUstream_st* s) {
  Queue& q = queue();
  std::lock_guard lock(q.m);
  s->destroyed = true;
  q.destroyed.push_back(s);
  forget_destroyed(q);
}

}  // namespace vidlora_emu

// ---- the runtime API ----

using vidlora_emu::device;
using vidlora_emu::last_error;
using vidlora_emu::memory;

namespace {
cudaError_t set(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}
void* allocate(std::size_t bytes, bool on_device) {
  auto& mem = memory();
  std::lock_guard lock(mem.m);
  if (on_device && mem.device_bytes + bytes > device().total_memory) return nullptr;
  // 256-byte aligned as cudaMalloc's, and exactly `bytes` long, so that AddressSanitizer's redzone starts at the end.
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<std::size_t>(bytes, 1)) != 0) return nullptr;
  std::memset(p, 0xff, bytes);  // uninitialised device memory: NaN patterns
  mem.live[reinterpret_cast<std::uintptr_t>(p)] = {bytes, on_device};
  if (on_device) mem.device_bytes += bytes;
  return p;
}
cudaError_t release(void* p, bool on_device) {
  if (!p) return cudaSuccess;
  auto& mem = memory();
  std::lock_guard lock(mem.m);
  auto it = mem.live.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == mem.live.end() || it->second.device != on_device) {
    std::fprintf(stderr, "vidlora CUDA emulation: %s of %p, which %s did not return\n",
                 on_device ? "cudaFree" : "cudaFreeHost", p, on_device ? "cudaMalloc" : "cudaMallocHost");
    return set(cudaErrorInvalidValue);
  }
  if (on_device) mem.device_bytes -= it->second.bytes;
  mem.live.erase(it);
  std::free(p);
  return cudaSuccess;
}
// A copy as CUDA runs it (the runtime API's "API synchronization behavior"), with `async` for cudaMemcpyAsync: checked
// at the call; then queued on the stream (the legacy one for cudaMemcpy). A pageable source is read at the call (the
// driver stages it before returning); a copy into pageable memory, and cudaMemcpy to or from pinned memory, returns
// once it has run; the rest (device to device, cudaMemcpyAsync to or from pinned memory) returns at once.
cudaError_t copy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind, const char* call, cudaStream_t stream,
                 bool async) {
  if (n == 0) return cudaSuccess;
  auto bad = [&](const char* what) {
    std::fprintf(stderr, "vidlora CUDA emulation: %s of %zu bytes from %p to %p: %s\n", call, n, src, dst, what);
    return set(cudaErrorInvalidValue);
  };
  using vidlora_emu::in_device_memory;
  using vidlora_emu::is_device_pointer;
  const bool dst_dev = in_device_memory(dst, n), src_dev = in_device_memory(src, n);
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (!dst_dev) return bad("the destination is not device memory (or the copy runs past its allocation)");
      if (is_device_pointer(src)) return bad("the source is device memory (HostToDevice)");
      break;
    case cudaMemcpyDeviceToHost:
      if (!src_dev) return bad("the source is not device memory (or the copy runs past its allocation)");
      if (is_device_pointer(dst)) return bad("the destination is device memory (DeviceToHost)");
      break;
    case cudaMemcpyDeviceToDevice:
      if (!src_dev || !dst_dev) return bad("an end is not device memory (or the copy runs past its allocation)");
      break;
    case cudaMemcpyHostToHost: break;
    default:  // cudaMemcpyDefault: whatever the pointers are; a device end must hold the whole range
      if ((is_device_pointer(dst) && !dst_dev) || (is_device_pointer(src) && !src_dev))
        return bad("the copy runs past its allocation");
  }
  // Where each end is: device memory, page-locked host memory (cudaMallocHost) or pageable host memory.
  const bool src_on_device = is_device_pointer(src), dst_on_device = is_device_pointer(dst);
  const bool src_pageable = !src_on_device && !in_device_memory(src, n);
  const bool dst_pageable = !dst_on_device && !in_device_memory(dst, n);
  const bool staged = src_pageable && dst_on_device;  // the driver copies the source at the call
  std::function<void()> work;
  // cudaMemcpy from pageable memory to the device waits for the legacy stream's earlier work before it copies ("a stream
  // sync is performed before the copy is initiated"); cudaMemcpyAsync from pageable memory does not.
  if (!async && staged) vidlora_emu::wait_for(vidlora_emu::newest_on(nullptr));
  if (staged) {
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + n);
    work = [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); };
  } else {
    work = [dst, src, n] { std::memmove(dst, src, n); };
  }
  const std::uint64_t id = vidlora_emu::enqueue(stream, std::move(work));
  // Returns once the copy ran: host to host, into pageable memory, and cudaMemcpy to or from page-locked memory.
  const bool host_only = !src_on_device && !dst_on_device, device_only = src_on_device && dst_on_device;
  const bool returns_done = host_only || (src_on_device && dst_pageable) || (!async && !device_only && !staged);
  if (returns_done) vidlora_emu::wait_for(id);
  return cudaSuccess;
}
cudaError_t fill(void* p, int value, std::size_t n, const char* call, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!vidlora_emu::is_device_pointer(p) || !vidlora_emu::in_device_memory(p, n)) {
    std::fprintf(stderr, "vidlora CUDA emulation: %s of %zu bytes at %p: not device memory, or past its end\n", call, n,
                 p);
    return set(cudaErrorInvalidValue);
  }
  vidlora_emu::enqueue(stream, [p, value, n] { std::memset(p, value, n); });  // asynchronous, cudaMemset too
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : set(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int d) {
  if (d != 0) return set(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "vidlora CUDA emulation (sm_%d)", device().cc);
  prop->major = device().major();
  prop->minor = device().minor();
  prop->totalGlobalMem = device().total_memory;
  prop->multiProcessorCount = 4;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = device().optin_shared();
  prop->sharedMemPerMultiprocessor = device().optin_shared() + 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->l2CacheSize = 4 << 20;
  prop->regsPerBlock = 65536;
  prop->unifiedAddressing = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d) {
  if (d != 0) return set(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = device().major(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = device().minor(); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(device().optin_shared());
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = 4; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    default:
      std::fprintf(stderr, "vidlora CUDA emulation: cudaDeviceGetAttribute(%d) is not emulated\n",
                   static_cast<int>(attr));
      return set(cudaErrorInvalidValue);
  }
}
cudaError_t cudaDeviceGetPCIBusId(char* id, int len, int d) {
  if (d != 0) return set(cudaErrorInvalidDevice);
  std::snprintf(id, static_cast<std::size_t>(len), "0000:00:00.0");
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  vidlora_emu::wait_for_all();
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error (emulated runtime)";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaErrorUnknown";
  }
}
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total) {
  auto& mem = memory();
  std::lock_guard lock(mem.m);
  *total = device().total_memory;
  *free_bytes = device().total_memory - mem.device_bytes;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  *p = allocate(bytes, true);
  return *p ? cudaSuccess : set(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* p) {
  vidlora_emu::wait_for_all();  // cudaFree waits for the device: no queued work reads freed memory
  return release(p, true);
}
cudaError_t cudaMallocHost(void** p, std::size_t bytes) {
  *p = allocate(bytes, false);
  return *p ? cudaSuccess : set(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** p, std::size_t bytes, unsigned) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void* p) {
  vidlora_emu::wait_for_all();
  return release(p, false);
}
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  return copy(dst, src, n, kind, "cudaMemcpy", nullptr, false);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
  return copy(dst, src, n, kind, "cudaMemcpyAsync", stream, true);
}
cudaError_t cudaMemset(void* p, int value, std::size_t n) { return fill(p, value, n, "cudaMemset", nullptr); }
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n, cudaStream_t stream) {
  return fill(p, value, n, "cudaMemsetAsync", stream);
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  *s = new CUstream_st{flags};
  if (!(flags & cudaStreamNonBlocking)) vidlora_emu::track_blocking_stream(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  vidlora_emu::destroy_stream(s);  // its queued work still runs (when waited for), as on a GPU
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  // The legacy stream's wait covers the blocking streams' earlier work (an operation queued there would wait for it).
  vidlora_emu::wait_for(vidlora_emu::newest_on(s));
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  // Not ready while work is queued (on the legacy stream: its own or the blocking streams'); asking runs it, so that a
  // loop of queries ends.
  return vidlora_emu::run_queued_on(s) ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaStreamGetFlags(cudaStream_t s, unsigned* flags) {
  *flags = s && s != cudaStreamLegacy ? s->flags : 0;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  // The stream's later work waits for the record (a never-recorded event: nothing to wait for, but on the legacy
  // stream still an operation, with the legacy stream's waits).
  if (const std::uint64_t op = vidlora_emu::event_op(e); op || s == nullptr || s == cudaStreamLegacy)
    vidlora_emu::enqueue(
        s, [] {}, op);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  *e = new CUevent_st{};
  (*e)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;  // a queued record keeps its time's storage
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  vidlora_emu::enqueue(
      s, [at = e->at] { *at = std::chrono::steady_clock::now(); }, 0, &e->op);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  vidlora_emu::wait_for(vidlora_emu::event_op(e));
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return vidlora_emu::run_if_queued(vidlora_emu::event_op(e)) ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  const std::uint64_t a = vidlora_emu::event_op(start), b = vidlora_emu::event_op(end);
  if (!a || !b || (start->flags & cudaEventDisableTiming) || (end->flags & cudaEventDisableTiming)) {
    std::fprintf(stderr, "vidlora CUDA emulation: cudaEventElapsedTime of an event %s\n",
                 !a || !b ? "never recorded" : "made with cudaEventDisableTiming");
    return set(cudaErrorInvalidResourceHandle);
  }
  // Both records must have run; a GPU answers cudaErrorNotReady otherwise (a status, not an error that stays).
  if (vidlora_emu::is_queued(a) || vidlora_emu::is_queued(b)) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(*end->at - *start->at).count();
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<std::size_t>(value) > device().optin_shared()) {
      std::fprintf(stderr, "vidlora CUDA emulation: MaxDynamicSharedMemorySize %d above the device's %zu\n", value,
                   device().optin_shared());
      return set(cudaErrorInvalidValue);
    }
    std::lock_guard lock(vidlora_emu::attribute_mutex);
    vidlora_emu::max_dynamic_shared[func] = value;
  }
  return cudaSuccess;
}
// The emulation does not know a kernel's registers: it reports the most a thread may have (255, allocated as 256), so
// that the occupancy computed from them is the lowest a GPU could give (the register-tile attention uses 212-255).
constexpr int kEmulatedRegisters = 255;
// Blocks of `func` a multiprocessor holds at once: limited by threads (2,048 on sm_80 / sm_90, 1,536 on sm_86 / sm_89,
// 1,024 on sm_75), registers (64 Ki, 256 a thread) and shared memory (the card's per multiprocessor, 1 KiB reserved a
// block; 0 blocks when the dynamic bytes exceed the function's attribute). Static shared memory is not known before a
// block runs and is not counted.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* func, int block_size,
                                                          std::size_t dynamic_shared) {
  if (block_size <= 0 || block_size > 1024) return set(cudaErrorInvalidValue);
  int max_dynamic = 48 * 1024;
  {
    std::lock_guard lock(vidlora_emu::attribute_mutex);
    if (auto it = vidlora_emu::max_dynamic_shared.find(func); it != vidlora_emu::max_dynamic_shared.end())
      max_dynamic = it->second;
  }
  if (dynamic_shared > static_cast<std::size_t>(max_dynamic)) {
    *blocks = 0;
    return cudaSuccess;
  }
  const int cc = device().cc;
  const int threads_per_sm = cc >= 90 || cc == 80 ? 2048 : cc >= 86 ? 1536 : 1024;
  const int warps = (block_size + 31) / 32;
  const auto by_threads = static_cast<std::size_t>(threads_per_sm / (warps * 32));
  const auto by_registers = static_cast<std::size_t>(65536 / (warps * 32 * (kEmulatedRegisters + 1)));
  const std::size_t by_shared = (device().optin_shared() + 1024) / (dynamic_shared + 1024);
  *blocks = static_cast<int>(std::min({by_threads, by_registers, by_shared}));
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  std::memset(attr, 0, sizeof(*attr));
  std::lock_guard lock(vidlora_emu::attribute_mutex);
  auto it = vidlora_emu::max_dynamic_shared.find(func);
  attr->maxDynamicSharedSizeBytes = it != vidlora_emu::max_dynamic_shared.end() ? it->second : 48 * 1024;
  attr->maxThreadsPerBlock = 1024;
  attr->numRegs = kEmulatedRegisters;
  attr->ptxVersion = device().cc;  // what the kernels were "built" for: the emulated device's architecture
  attr->binaryVersion = device().cc;
  return cudaSuccess;
}
