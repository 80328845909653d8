// Internal to Shape's files: rendering the messages of a snapshot from rows,
// building response bodies from them, and replaying logged messages into a
// shape's rows (load, rebuild of its state).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "shapes/shape.h"
#include "shapes/shape_state.h"

namespace shapeproxy::shapes {

void append_row_values(std::string& out, const TableSchema& table, const Row& row,
                       const std::vector<std::size_t>& columns);
// An insert message of a snapshot.
void append_snapshot_message(std::string& out, const TableSchema& table,
                             const std::vector<std::size_t>& selected,
                             const std::string& relation_json, std::string_view key,
                             const Row& row);
// {"headers":{"control":"snapshot-end","xmin":..,"xmax":..,"xip_list":[..]}}
// after every snapshot (as Electric's snapshotter appends it), and after
// every fallback refresh (its query's snapshot): xids as decimal strings.
// Clients match the txids they await against it (TanStack DB's awaitTxId).
// Control messages carry no row: replay skips them.
std::string snapshot_end_message(const PgSnapshot& snapshot);

// Builds snapshot response bodies message by message: the same bytes as
// ShapeLog::chunk() of the messages (a JSON array per body of at most
// chunk_bytes; a single larger message gets its own; never empty).
class SnapshotChunkWriter {
 public:
  SnapshotChunkWriter(std::size_t chunk_bytes, std::size_t expected_messages)
      : chunk_bytes_(chunk_bytes), expected_(expected_messages) {}

  // Whether `message` starts a new body (the current one is complete).
  bool starts_body(std::string_view message) const {
    return body_.size() > 1 && body_.size() + message.size() + 2 > chunk_bytes_;
  }
  void add(std::string_view message);
  ShapeLog::Chunks finish();
  // Streaming use: the current body, closed, and a new one begun.
  std::string take_body();
  bool empty_body() const { return body_.size() == 1; }

 private:
  void close_body();

  std::size_t chunk_bytes_;
  std::size_t expected_;
  std::size_t seen_ = 0;
  std::string body_ = "[";
  ShapeLog::Chunks chunks_;
};

// Rebuilds row state from a logged message: one message, or a stored
// snapshot chunk (a JSON array of messages). Only served columns are known;
// the rest stay NULL (they matter only for unchanged TOAST values). Returns
// false for something that is not a message (changing nothing for it; wrong
// JSON types never throw). Control messages (snapshot-end) change nothing.
bool replay_message(ShapeState& rows, const TableSchema& table, std::string_view message);

// Writes chunks built in memory to `path` and returns them as stored there.
Result<ShapeLog::Chunks> store_chunks(const std::filesystem::path& path,
                                      const ShapeLog::Chunks& chunks,
                                      const std::function<bool()>& stopped = {});

}  // namespace shapeproxy::shapes
