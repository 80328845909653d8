// Process resource limits lowered for a scope, to make the proxy's own file
// operations fail as on a full disk or at the open-files limit. They apply to
// the whole test process (PostgreSQL runs in other processes and is not
// affected); output redirected to a file is cut by the size limit too (pipe
// it, e.g. `| cat`, to see every line).
#pragma once

#include <gtest/gtest.h>

#include <utility>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

namespace shapeproxy::testing {

// RLIMIT_FSIZE: writes past `bytes` fail with EFBIG after writing what fits
// (a partial write, like a disk filling up). Works as root and non-root;
// SIGXFSZ is ignored meanwhile.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_signal_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &lowered), 0);
  }
  ~FileSizeLimit() { lift(); }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  void lift() {
    if (std::exchange(lifted_, true)) return;
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, previous_signal_);
  }

 private:
  rlimit saved_{};
  sighandler_t previous_signal_ = SIG_DFL;
  bool lifted_ = false;
};

// RLIMIT_NOFILE lowered to the lowest free descriptor: the next open() fails
// with EMFILE, while what is open already (sockets, the state store's files)
// keeps working.
class OpenFilesLimit {
 public:
  OpenFilesLimit() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    const int lowest_free = ::dup(0);
    ::close(lowest_free);
    rlimit lowered = saved_;
    lowered.rlim_cur = static_cast<rlim_t>(lowest_free);
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  }
  ~OpenFilesLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  OpenFilesLimit(const OpenFilesLimit&) = delete;
  OpenFilesLimit& operator=(const OpenFilesLimit&) = delete;

 private:
  rlimit saved_{};
};

}  // namespace shapeproxy::testing
