#pragma once
// A check of the emulation that must fail runs in a forked child (emulation_checks.cpp, racecheck_checks.cpp): its
// stderr captured, how it ended reported.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>

#include <catch2/catch.hpp>

namespace emu_checks {

struct ChildResult {
  bool aborted = false;  // killed by SIGABRT (the emulation's errors)
  int exit_code = -1;    // its exit status when it exited (-1: killed by a signal)
  std::string stderr_text;
};
// Runs body in a forked child with its stderr captured, then waits for the device as a program would (so that the
// work body queued runs: the emulation's streams run it when waited for); the child exits 0 if that returns.
template <class F>
ChildResult run_in_child(F body) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(stdout);  // what the parent printed is not printed again by the child
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    std::signal(SIGABRT, SIG_DFL);  // not Catch's handler: the child dies as the emulation makes it, silently
    std::fclose(stdout);
    body();
    (void)cudaDeviceSynchronize();
    _exit(0);
  }
  close(fds[1]);
  ChildResult r;
  char buffer[4096];
  for (;;) {
    const ssize_t got = read(fds[0], buffer, sizeof buffer);
    if (got > 0) {
      r.stderr_text.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  r.aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace emu_checks
