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

// Renders a snapshot's insert messages: the bytes of
// append_snapshot_message() with the row's key (Shape::row_key()), made faster by writing the
// escaped key straight into the message and by escaping the constant parts
// once. Holds copies of its shape's immutable parts, so it renders on any
// thread (rfc/0005).
class SnapshotRenderer {
 public:
  // `relation_json`: ["schema","table"]; `key_prefix`: "schema"."table".
  SnapshotRenderer(std::shared_ptr<const TableSchema> table, std::vector<std::size_t> selected,
                   const std::string& relation_json, const std::string& key_prefix);

  void append_message(std::string& out, const Row& row) const;

 private:
  std::shared_ptr<const TableSchema> table_;
  std::vector<std::size_t> selected_;
  std::string head_;                // {"key":"<the prefix, escaped>
  std::vector<std::string> names_;  // per selected column: ,"<name>":
  std::string tail_;                // }, "headers" with the relation, }
};

// Builds snapshot response bodies message by message: the same bytes as
// ShapeLog::chunk() of the messages (a JSON array per body of at most
// chunk_bytes; a single larger message gets its own; never empty).
class SnapshotChunkWriter {
 public:
  SnapshotChunkWriter(std::size_t chunk_bytes, std::size_t expected_messages)
      : chunk_bytes_(chunk_bytes), expected_(expected_messages) {}

  // Whether `message` starts a new body (the current one is complete).
  bool starts_body(std::string_view message) const {
    return starts_body(body_.size(), message.size(), chunk_bytes_);
  }
  // The rule itself, for a body of `body_bytes` so far (its '[' and commas
  // included): one that holds a message takes no other that would carry it
  // past `chunk_bytes`.
  static bool starts_body(std::size_t body_bytes, std::size_t message_bytes,
                          std::size_t chunk_bytes) {
    return body_bytes > 1 && body_bytes + message_bytes + 2 > chunk_bytes;
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
