#include "shapes/row_diff.h"

#include <algorithm>
#include <optional>
#include <string_view>

namespace shapeproxy::shapes {

namespace {

const std::optional<std::string>& column_or_null(const Row& row, std::size_t index) {
  static const std::optional<std::string> kNull;
  return index < row.size() ? row[index] : kNull;
}

std::vector<std::size_t> changed_columns(const Row& old_row, const Row& new_row,
                                         const std::vector<std::size_t>& selected) {
  std::vector<std::size_t> changed;
  for (std::size_t index : selected) {
    if (column_or_null(old_row, index) != column_or_null(new_row, index)) changed.push_back(index);
  }
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  return changed;
}

template <typename Entry>
void sort_by_key(std::vector<Entry>& entries) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.key < b.key; });
}

}  // namespace

RowDiff diff_rows(const std::unordered_map<std::string, Row>& served, const SnapshotRows& fresh,
                  const std::vector<std::size_t>& selected, const RowKeyFunction& key_of) {
  std::unordered_map<std::string_view, const Row*> fresh_by_key;
  std::vector<std::string> fresh_keys;
  fresh_keys.reserve(fresh.rows.size());
  for (const Row& row : fresh.rows) fresh_keys.push_back(key_of(row));
  fresh_by_key.reserve(fresh.rows.size());
  for (std::size_t i = 0; i < fresh.rows.size(); ++i) {
    fresh_by_key.insert_or_assign(std::string_view(fresh_keys[i]), &fresh.rows[i]);
  }

  RowDiff diff;
  for (const auto& [key, new_row] : fresh_by_key) {
    auto old = served.find(std::string(key));
    if (old == served.end()) {
      diff.inserts.push_back(KeyedRow{std::string(key), *new_row});
      continue;
    }
    auto changed = changed_columns(old->second, *new_row, selected);
    if (changed.empty()) continue;
    diff.updates.push_back(UpdatedRow{std::string(key), old->second, *new_row, std::move(changed)});
  }
  for (const auto& [key, old_row] : served) {
    if (!fresh_by_key.contains(key)) diff.deletes.push_back(KeyedRow{key, old_row});
  }
  sort_by_key(diff.inserts);
  sort_by_key(diff.updates);
  sort_by_key(diff.deletes);
  return diff;
}

}  // namespace shapeproxy::shapes
