// bench_storage_synthesize: appends synthetic replicated operations to shape
// directories a proxy created (through the storage API, as the proxy writes
// them), so the restart benchmark can hold 10M operations on disk without
// driving them through PostgreSQL (~1.5 h at ~1,800 ops/s with 1,000 shapes).
//
// Every shape gets its share of --ops as updates of its own rows (the
// "amount" column), one update per row per transaction, like the full-table
// UPDATEs of bench/storage part B; transaction t has commit LSN
// --base-lsn + t * 1000 in every shape. Prints one JSON line: shapes,
// operations, bytes appended, seconds.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/chunk_coding.h"
#include "storage/shape_files.h"

namespace {

namespace fs = std::filesystem;
using shapeproxy::storage::ShapeFiles;
using shapeproxy::storage::StoredOperation;

struct ShapeRow {
  std::string key_json;  // the "key" as a JSON string literal
  std::string id_json;   // the "id" value as a JSON string literal
};

int usage() {
  std::fprintf(stderr,
               "usage: bench_storage_synthesize --shapes-dir DIR --ops N [--base-lsn LSN]\n"
               "  DIR: <data-dir>/shapes of a stopped proxy; N: operations across all shapes\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path shapes_dir;
  std::uint64_t total_ops = 0;
  std::uint64_t base_lsn = 1ull << 40;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--shapes-dir") {
      shapes_dir = argv[i + 1];
    } else if (flag == "--ops") {
      total_ops = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--base-lsn") {
      base_lsn = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      return usage();
    }
  }
  if (shapes_dir.empty() || total_ops == 0) return usage();
  auto started = std::chrono::steady_clock::now();

  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(shapes_dir)) {
    // Shapes only: not the row store (`state`) or the loader's dot-dirs.
    if (entry.is_directory() && fs::exists(entry.path() / "meta.json"))
      dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  if (dirs.empty()) {
    std::fprintf(stderr, "no shape directories under %s\n", shapes_dir.c_str());
    return 1;
  }
  std::uint64_t written_ops = 0;
  std::uint64_t bytes = 0;
  for (std::size_t s = 0; s < dirs.size(); ++s) {
    std::uint64_t share = total_ops / dirs.size() + (s < total_ops % dirs.size() ? 1 : 0);
    auto opened = ShapeFiles::open(dirs[s]);
    if (!opened) {
      std::fprintf(stderr, "%s: %s\n", dirs[s].c_str(), opened.error().to_string().c_str());
      return 1;
    }
    auto& [files, stored] = opened.value();
    std::vector<ShapeRow> rows;
    auto add_row = [&](const nlohmann::json& message) {
      // Rows only: not the snapshot-end control message after them.
      if (!message.is_object() || !message.contains("key")) return;
      rows.push_back({message["key"].dump(), message["value"]["id"].dump()});
    };
    for (const auto& message : stored.snapshot) add_row(nlohmann::json::parse(message));
    for (const auto& chunk : stored.snapshot_chunks) {     // whole response bodies: arrays
      auto body = shapeproxy::storage::read_chunk(chunk);  // decoded when stored gzip
      if (!body) {
        std::fprintf(stderr, "%s: %s\n", dirs[s].c_str(), body.error().to_string().c_str());
        return 1;
      }
      for (const auto& message : nlohmann::json::parse(body.value())) add_row(message);
    }
    if (rows.empty()) continue;
    std::string relation = "[\"" + stored.meta["schema"].get<std::string>() + "\",\"" +
                           stored.meta["table"].get<std::string>() + "\"]";
    auto before = files->changes_bytes();
    for (std::uint64_t t = 0; share > 0; ++t) {
      std::uint64_t lsn = base_lsn + t * 1000;
      std::string lsn_text = std::to_string(lsn);
      std::vector<StoredOperation> transaction;
      std::size_t count = std::min<std::uint64_t>(rows.size(), share);
      for (std::size_t i = 0; i < count; ++i) {
        std::string json =
            "{\"key\":" + rows[i].key_json + ",\"value\":{\"id\":" + rows[i].id_json +
            ",\"amount\":\"" + std::to_string(1000 + t) +
            ".37\"},\"headers\":{\"operation\":\"update\",\"relation\":" + relation +
            ",\"lsn\":\"" + lsn_text + "\",\"op_position\":" + std::to_string(i) + ",\"txids\":[" +
            std::to_string(1000 + t) + "]" + (i + 1 == count ? ",\"last\":true" : "") + "}}";
        transaction.push_back({lsn, i, std::move(json)});
      }
      files->append_transaction(transaction);
      share -= count;
      written_ops += count;
      if (auto written = files->write(); !written) {
        std::fprintf(stderr, "%s\n", written.error().to_string().c_str());
        return 1;
      }
    }
    if (auto synced = files->sync(); !synced) {
      std::fprintf(stderr, "%s\n", synced.error().to_string().c_str());
      return 1;
    }
    bytes += files->changes_bytes() - before;
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("{\"shapes\":%zu,\"operations\":%llu,\"bytes\":%llu,\"seconds\":%.2f}\n", dirs.size(),
              static_cast<unsigned long long>(written_ops), static_cast<unsigned long long>(bytes),
              seconds);
  return written_ops == total_ops ? 0 : 1;
}
