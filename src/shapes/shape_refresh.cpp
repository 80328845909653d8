// Shape's fallback refreshes: a direct query's rows diffed into the log as
// one group (see Shape::apply_refresh in shape.h and rfc/0001, "A refresh
// never goes back in time").
#include <nlohmann/json.hpp>

#include "shapes/row_diff.h"
#include "shapes/shape.h"
#include "shapes/shape_meta.h"
#include "shapes/shape_operation.h"

namespace shapeproxy::shapes {

std::uint64_t Shape::begin_refresh() {
  ++refreshes_in_flight_;
  return streamed_base_ + streamed_xids_.size();
}

void Shape::end_refresh() {
  if (refreshes_in_flight_ > 0) --refreshes_in_flight_;
}

Result<bool> Shape::apply_refresh(const SnapshotRows& fresh, std::uint64_t mark,
                                  replication::Lsn floor) {
  (void)mark;  // the result may predate it: every streamed xid is checked
  if (snapshot_ && !fresh.snapshot.sees_all_of(*snapshot_)) return false;  // older than the rows
  for (auto xid : streamed_xids_) {
    if (!fresh.snapshot.visible(xid)) return false;  // older than the log
  }
  settle_state();
  auto diff = diff_ordered([this](const auto& each) { state_.for_each(each); }, fresh,
                           definition_.selected, [this](const Row& row) { return row_key(row); });
  snapshot_ = fresh.snapshot;
  forget_streamed_xids();  // all seen by `fresh`, so by every later result
  filtering_ = true;
  std::vector<Operation> operations;
  for (auto& removed : diff.deletes) {
    state_.erase(removed.key);
    operations.push_back({Operation::Kind::kDelete, removed.key, std::move(removed.row), {}, {}});
  }
  for (auto& updated : diff.updates) {
    state_.put(updated.key, updated.new_row);
    operations.push_back({Operation::Kind::kUpdate, updated.key, std::move(updated.new_row),
                          std::move(updated.old_row), std::move(updated.changed_columns)});
  }
  for (auto& inserted : diff.inserts) {
    state_.put(inserted.key, inserted.row);
    operations.push_back({Operation::Kind::kInsert, inserted.key, std::move(inserted.row), {}, {}});
  }
  if (files_) {
    if (auto written = files_->write_meta(to_json(meta())); !written) return written.error();
  }
  if (operations.empty()) return false;
  // Just past the last logged group: replicated commits that follow lie
  // further on (each commit record takes tens of bytes of WAL).
  auto appended =
      append_operations(operations, 0, std::max(last_logged_tx_ + 1, floor), &fresh.snapshot);
  if (!appended) return appended.error();
  commit_unpersisted();
  return true;
}

}  // namespace shapeproxy::shapes
