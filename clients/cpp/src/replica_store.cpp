#include "replica_store.h"

#include <mutex>

namespace shapeproxy::client::detail {
namespace {

const nlohmann::json* column_of(const nlohmann::json& value, std::string_view column) {
  if (!value.is_object()) return nullptr;
  auto it = value.find(column);
  return it == value.end() ? nullptr : &*it;
}

}  // namespace

ReplicaStore::ReplicaStore(std::vector<std::string> indexed_columns) {
  for (auto& column : indexed_columns) indexes_.emplace(std::move(column), Index{});
}

void ReplicaStore::index_row(const std::string& key, const nlohmann::json& value) {
  for (auto& [column, index] : indexes_) {
    if (const auto* cell = column_of(value, column)) index[cell->dump()].insert(key);
  }
}

void ReplicaStore::unindex_row(const std::string& key, const nlohmann::json& value) {
  for (auto& [column, index] : indexes_) {
    const auto* cell = column_of(value, column);
    if (!cell) continue;
    auto it = index.find(cell->dump());
    if (it == index.end()) continue;
    it->second.erase(key);
    if (it->second.empty()) index.erase(it);
  }
}

std::optional<Change> ReplicaStore::apply(const ChangeMessage& message) {
  std::unique_lock lock(mutex_);
  auto it = rows_.find(message.key);
  if (message.kind == ChangeKind::kDelete) {
    if (it == rows_.end()) return std::nullopt;
    Change change{Operation::kDelete, Row{it->first, std::move(it->second)}, std::nullopt};
    unindex_row(change.old_row->key, change.old_row->value);
    rows_.erase(it);
    return change;
  }
  if (it == rows_.end()) {
    // An insert, or an update of a row we do not hold (it moved into the shape).
    auto [inserted, _] = rows_.emplace(message.key, message.value);
    index_row(inserted->first, inserted->second);
    return Change{Operation::kInsert, std::nullopt, Row{inserted->first, inserted->second}};
  }
  Row old_row{it->first, it->second};
  unindex_row(it->first, it->second);
  if (message.kind == ChangeKind::kUpdate) {
    // Default replica mode sends only the changed columns: merge them.
    for (const auto& [column, cell] : message.value.items()) it->second[column] = cell;
  } else {
    it->second = message.value;
  }
  index_row(it->first, it->second);
  return Change{Operation::kUpdate, std::move(old_row), Row{it->first, it->second}};
}

std::size_t ReplicaStore::clear() {
  std::unique_lock lock(mutex_);
  std::size_t n = rows_.size();
  rows_.clear();
  for (auto& [_, index] : indexes_) index.clear();
  return n;
}

std::optional<Row> ReplicaStore::get(std::string_view key) const {
  std::shared_lock lock(mutex_);
  auto it = rows_.find(key);
  if (it == rows_.end()) return std::nullopt;
  return Row{it->first, it->second};
}

std::vector<Row> ReplicaStore::lookup(std::string_view column, const nlohmann::json& value) const {
  std::shared_lock lock(mutex_);
  std::vector<Row> out;
  if (auto index = indexes_.find(column); index != indexes_.end()) {
    auto keys = index->second.find(value.dump());
    if (keys == index->second.end()) return out;
    for (const auto& key : keys->second) {
      auto row = rows_.find(key);
      if (row != rows_.end()) out.push_back(Row{row->first, row->second});
    }
    return out;
  }
  for (const auto& [key, row] : rows_) {
    const auto* cell = column_of(row, column);
    if (cell && *cell == value) out.push_back(Row{key, row});
  }
  return out;
}

std::vector<Row> ReplicaStore::all() const {
  std::shared_lock lock(mutex_);
  std::vector<Row> out;
  out.reserve(rows_.size());
  for (const auto& [key, row] : rows_) out.push_back(Row{key, row});
  return out;
}

std::size_t ReplicaStore::count() const {
  std::shared_lock lock(mutex_);
  return rows_.size();
}

}  // namespace shapeproxy::client::detail
