// A private scratch directory for fuzz targets that read files: on tmpfs
// when there is one (the loaders fsync, and syncing a disk would dominate
// every run), else under /tmp. Created once per process and removed when it
// exits normally (a crash leaves it, beside the reproducer).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

inline const std::filesystem::path& fuzz_scratch_dir(const char* name) {
  struct Scratch {
    std::filesystem::path path;
    ~Scratch() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Scratch scratch{[name] {
    std::string dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : "/tmp/";
    dir += std::string(name) + ".XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) std::abort();
    return std::filesystem::path(dir);
  }()};
  return scratch.path;
}
