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

}  // namespace

RowDiff diff_ordered(const ServedRows& served, const SnapshotRows& fresh,
                     const std::vector<std::size_t>& selected, const RowKeyFunction& key_of) {
  // The fresh rows by key, ascending; of a repeated key the last one.
  std::vector<std::pair<std::string, const Row*>> sorted;
  sorted.reserve(fresh.rows.size());
  for (const Row& row : fresh.rows) sorted.emplace_back(key_of(row), &row);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::size_t kept = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (kept > 0 && sorted[kept - 1].first == sorted[i].first) {
      sorted[kept - 1].second = sorted[i].second;
    } else {
      if (kept != i) sorted[kept] = std::move(sorted[i]);
      ++kept;
    }
  }
  sorted.resize(kept);

  RowDiff diff;
  std::size_t next = 0;
  served([&](const std::string& key, const Row& old_row) {
    for (; next < sorted.size() && sorted[next].first < key; ++next) {
      diff.inserts.push_back(KeyedRow{std::move(sorted[next].first), *sorted[next].second});
    }
    if (next < sorted.size() && sorted[next].first == key) {
      const Row& new_row = *sorted[next].second;
      ++next;
      auto changed = changed_columns(old_row, new_row, selected);
      if (!changed.empty())
        diff.updates.push_back(UpdatedRow{key, old_row, new_row, std::move(changed)});
      return true;
    }
    diff.deletes.push_back(KeyedRow{key, old_row});
    return true;
  });
  for (; next < sorted.size(); ++next) {
    diff.inserts.push_back(KeyedRow{std::move(sorted[next].first), *sorted[next].second});
  }
  return diff;
}

RowDiff diff_rows(const std::unordered_map<std::string, Row>& served, const SnapshotRows& fresh,
                  const std::vector<std::size_t>& selected, const RowKeyFunction& key_of) {
  std::vector<std::pair<std::string_view, const Row*>> ordered;
  ordered.reserve(served.size());
  for (const auto& [key, row] : served) ordered.emplace_back(key, &row);
  std::sort(ordered.begin(), ordered.end());
  return diff_ordered(
      [&](const std::function<bool(const std::string&, const Row&)>& each) {
        std::string key;
        for (const auto& [view, row] : ordered) {
          key.assign(view);
          if (!each(key, *row)) return;
        }
      },
      fresh, selected, key_of);
}

}  // namespace shapeproxy::shapes
