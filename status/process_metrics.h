// What: the standard Prometheus process_* figures of this process, read from
// /proc (Linux): CPU seconds, resident and virtual memory, open and maximum
// file descriptors, start time.
// Why: operators alert on memory growth and descriptor exhaustion (every held
// shape keeps files open, every client a socket) with the usual names.
#pragma once

#include <cstdint>
#include <optional>

namespace shapeproxy::status {

struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;      // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the Unix epoch
};

// Empty where /proc cannot be read.
std::optional<ProcessStats> read_process_stats();

}  // namespace shapeproxy::status
