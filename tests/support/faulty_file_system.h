// FaultyFileSystem: the row state store's files (StateStoreOptions::
// file_system) through a wrapper that fails appends to RocksDB's table
// files (.sst, written by memtable flushes) and WAL files (.log) on demand,
// with the error a full disk gives (ENOSPC: RocksDB can resume once there
// is space) or a failing one (EIO: it cannot), and counts those appends.
// The process-wide RLIMIT_FSIZE of FileSizeLimit cannot tell the store's
// files from the shape logs; this can.
#pragma once

#include <rocksdb/file_system.h>
#include <rocksdb/io_status.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace shapeproxy::testing {

class FaultyFileSystem : public rocksdb::FileSystemWrapper {
 public:
  enum class Fault { kNone, kNoSpace, kIoError };

  FaultyFileSystem() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FaultyFileSystem"; }

  // From any thread; applies to the appends from now on.
  void fail(Fault fault) { fault_ = fault; }
  // Appends to table and WAL files that reached this file system (failed
  // ones too).
  std::uint64_t appends() const { return appends_; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    auto status = target()->NewWritableFile(name, options, result, dbg);
    if (status.ok() && (name.ends_with(".sst") || name.ends_with(".log"))) {
      *result = std::make_unique<DataFile>(std::move(*result), this);
    }
    return status;
  }

 private:
  class DataFile : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    DataFile(std::unique_ptr<rocksdb::FSWritableFile> file, FaultyFileSystem* owner)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)), owner_(owner) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (auto fault = owner_->append_fault(); !fault.ok()) return fault;
      return target()->Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (auto fault = owner_->append_fault(); !fault.ok()) return fault;
      return target()->Append(data, options, info, dbg);
    }

   private:
    FaultyFileSystem* owner_;
  };

  rocksdb::IOStatus append_fault() {
    ++appends_;
    switch (fault_.load()) {
      case Fault::kNoSpace:
        return rocksdb::IOStatus::NoSpace("injected: no space left on device");
      case Fault::kIoError:
        return rocksdb::IOStatus::IOError("injected: input/output error");
      case Fault::kNone:
        break;
    }
    return rocksdb::IOStatus::OK();
  }

  std::atomic<Fault> fault_{Fault::kNone};
  std::atomic<std::uint64_t> appends_{0};
};

}  // namespace shapeproxy::testing
