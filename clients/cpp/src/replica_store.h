// The local copy of a shape: rows by key, optional secondary indexes by
// column value, and the application of change messages. Thread-safe: one
// writer (the sync loop) and any number of readers.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "shape_messages.h"
#include "shapeproxy/replica_client.h"

namespace shapeproxy::client::detail {

class ReplicaStore {
 public:
  explicit ReplicaStore(std::vector<std::string> indexed_columns = {});

  // Applies one change and returns what a listener should see, or nothing
  // when it changes nothing (a delete of an unknown key).
  std::optional<Change> apply(const ChangeMessage& message);
  // Removes every row; returns how many there were.
  std::size_t clear();

  std::optional<Row> get(std::string_view key) const;
  std::vector<Row> lookup(std::string_view column, const nlohmann::json& value) const;
  std::vector<Row> all() const;
  std::size_t count() const;

 private:
  using Index = std::unordered_map<std::string, std::set<std::string>>;  // value.dump() -> keys

  void index_row(const std::string& key, const nlohmann::json& value);
  void unindex_row(const std::string& key, const nlohmann::json& value);

  mutable std::shared_mutex mutex_;
  std::map<std::string, nlohmann::json, std::less<>> rows_;
  std::map<std::string, Index, std::less<>> indexes_;  // column -> index
};

}  // namespace shapeproxy::client::detail
