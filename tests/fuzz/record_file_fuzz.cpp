// libFuzzer target: a record file (shape log or snapshot file) as found on
// disk. Reading must stop cleanly at the first bad record, report a good
// prefix no longer than the file, and hand out payloads inside the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "scratch_dir.h"
#include "storage/record_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy::storage;
  const auto path = fuzz_scratch_dir("record_file_fuzz") / "records.log";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::uint64_t seen = 0;
  auto good = RecordFile::read_all(path, [&](const Record& record) {
    if (record.position + record.payload.size() > size) std::abort();
    seen += kRecordHeaderBytes + record.payload.size();
  });
  if (!good.ok() || *good > size || *good != seen) std::abort();
  // Appending after the good prefix cuts the torn tail, as at load.
  auto file = RecordFile::open_for_append(path, *good);
  if (!file.ok() || file->size() != *good) std::abort();
  return 0;
}
