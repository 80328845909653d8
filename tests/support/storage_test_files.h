// Helpers of the storage and shape-log suites: a temporary directory removed
// with everything in it, and one transaction's stored operations.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/shape_files.h"

namespace shapeproxy::testing {

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/shapeproxy-storage-XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Operations <tx>_0 .. <tx>_<operations - 1>, each {"op":"<tx>_<op>"}.
inline std::vector<storage::StoredOperation> stored_transaction(std::uint64_t tx, int operations) {
  std::vector<storage::StoredOperation> out;
  for (int op = 0; op < operations; ++op) {
    out.push_back({tx, static_cast<std::uint64_t>(op),
                   "{\"op\":\"" + std::to_string(tx) + "_" + std::to_string(op) + "\"}"});
  }
  return out;
}

}  // namespace shapeproxy::testing
