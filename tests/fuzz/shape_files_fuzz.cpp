// libFuzzer target: a shape directory as the loader finds it after a restart
// (meta.json, the snapshot file, changes.log), then the meta.json through
// shape_meta_from_json, as the registry reloads shapes. Input: the three
// files' bytes separated by "\n====\n". A damaged shape must be refused
// with an error, never crash the proxy or be read outside its directory.
// Every snapshot chunk found is then decoded both ways (read_chunk, whole;
// ChunkInflater, piece by piece, as the HTTP layer sends it): the two agree,
// a decoded body has the length its record names, and a refusal is an error
// with a message; verify_snapshot and read_log run over the files too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

#include "scratch_dir.h"
#include "shapes/shape_meta.h"
#include "storage/chunk_coding.h"
#include "storage/shape_files.h"

namespace {

namespace fs = std::filesystem;

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Next part of `rest` up to the separator (all of it when there is none).
std::string_view next_part(std::string_view& rest) {
  constexpr std::string_view kSeparator = "\n====\n";
  auto at = rest.find(kSeparator);
  std::string_view part = rest.substr(0, at);
  rest = at == std::string_view::npos ? std::string_view() : rest.substr(at + kSeparator.size());
  return part;
}

// The body of a gzip chunk as the HTTP layer streams it, or nullopt.
std::optional<std::string> inflate_pieces(const shapeproxy::storage::StoredChunk& chunk) {
  shapeproxy::storage::ChunkInflater inflater(chunk);
  std::string out;
  char piece[4093];  // odd, so pieces end anywhere
  while (true) {
    auto got = inflater.read(piece, sizeof piece);
    if (!got.ok()) {
      if (got.error().message.empty()) std::abort();
      return std::nullopt;
    }
    if (*got == 0) return out;
    out.append(piece, *got);
    if (out.size() > chunk.decoded_length) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy;
  const fs::path dir = fuzz_scratch_dir("shape_files_fuzz") / "shape";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  write(dir / "meta.json", next_part(rest));
  write(dir / "snapshot.log", next_part(rest));
  write(dir / "changes.log", next_part(rest));
  auto opened = storage::ShapeFiles::open(dir);
  if (!opened.ok()) {
    if (opened.error().message.empty()) std::abort();
    return 0;
  }
  for (const auto& chunk : opened->second.snapshot_chunks) {
    auto whole = storage::read_chunk(chunk);
    if (!whole.ok() && whole.error().message.empty()) std::abort();
    if (whole.ok() && whole->size() != chunk.body_length()) std::abort();
    if (chunk.coding != storage::ChunkCoding::kGzip) continue;
    auto streamed = inflate_pieces(chunk);
    if (whole.ok() != streamed.has_value()) std::abort();
    if (whole.ok() && *whole != *streamed) std::abort();
  }
  (void)storage::ShapeFiles::verify_snapshot(dir / "snapshot.log");
  (void)storage::ShapeFiles::read_log(opened->first->log_files(),
                                      [](const storage::ShapeFiles::LoggedRecord&) {});
  auto meta = shapes::shape_meta_from_json(opened->second.meta);
  if (meta.ok()) (void)shapes::to_json(*meta);
  return 0;
}
