#pragma once
// Fibers for the tests that run a CUDA block's threads on one host thread (simt_block.hpp, the CUDA emulation's
// runtime): a context, a switch between two, and a context that starts a function on a stack of its own. On x86-64
// the context is a stack pointer, switched by fiber_switch (the callee-saved registers pushed on the old stack, popped
// from the new one): glibc's swapcontext also saves the signal mask, a system call each switch, which
// made it 90% of an emulated run. Elsewhere a ucontext.
#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace vidlora::test::fiber {

#if defined(__x86_64__)
// A naked inline function (no prologue of its own): every unit that includes this header may emit it, the linker keeps
// one, with or without -flto (a top-level asm block would define the symbol twice under LTO).
[[gnu::naked, gnu::noinline]] inline void fiber_switch(void** /*save_sp*/, void* /*load_sp*/) {
  asm(R"(
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");
}
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { fiber_switch(&from.sp, to.sp); }
// A context that starts `entry` (which must never return) on the stack [stack, stack + bytes): six zero registers and
// entry as the return address, so that entry begins with its stack pointer 8 past a 16-byte boundary, as after a
// call.
inline void make_context(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
  auto top = (reinterpret_cast<std::uintptr_t>(stack) + bytes) & ~std::uintptr_t{15};
  auto* sp = reinterpret_cast<void**>(top - 64);
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  sp[6] = reinterpret_cast<void*>(entry);
  sp[7] = nullptr;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc{};
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

}  // namespace vidlora::test::fiber
