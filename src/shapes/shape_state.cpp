#include "shapes/shape_state.h"

#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <vector>

namespace shapeproxy::shapes {
namespace {

// A bulk load writes its rows in batches of this many.
constexpr std::size_t kBulkBatchRows = 16 * 1024;

}  // namespace

ShapeState::ShapeState(std::shared_ptr<StateStore> store, std::uint64_t id)
    : store_(std::move(store)), id_(id) {}

const std::optional<ShapeState::Row>* ShapeState::in_layers(const std::string& key) const {
  for (auto layer = layers_.rbegin(); layer != layers_.rend(); ++layer) {
    auto found = layer->changes.find(key);
    if (found != layer->changes.end()) return &found->second;
  }
  return nullptr;
}

std::optional<ShapeState::Row> ShapeState::get(const std::string& key) const {
  if (const auto* layered = in_layers(key)) return *layered;
  auto stored = store_->get(StateStore::row_key(id_, key));
  if (!stored) {
    spdlog::error("shapes: {}", stored.error().to_string());
    return std::nullopt;
  }
  if (!stored.value()) return std::nullopt;
  auto row = decode_row(*stored.value());
  if (!row) spdlog::error("shapes: state store: a row of state {} does not decode", id_);
  return row;
}

bool ShapeState::holds(const std::string& key) const {
  if (const auto* layered = in_layers(key)) return layered->has_value();
  auto stored = store_->get(StateStore::row_key(id_, key));
  return stored && stored.value().has_value();
}

ShapeState::Layer& ShapeState::active() {
  if (layers_.empty() || layers_.back().sealed) layers_.emplace_back();
  return layers_.back();
}

void ShapeState::put(const std::string& key, Row row) {
  if (holds(key)) --rows_;  // replaced: put_new counts it again
  put_new(key, std::move(row));
}

void ShapeState::put_new(const std::string& key, Row row) {
  ++rows_;
  auto& layer = active();
  layer.changes.insert_or_assign(key, std::optional<Row>(std::move(row)));
  layer.rows = rows_;
  if (bulk_ && layer.changes.size() >= kBulkBatchRows) {
    if (auto written = write_layers(layers_.size(), std::nullopt); !written)
      spdlog::error("shapes: {}", written.error().to_string());
  }
}

void ShapeState::erase(const std::string& key) {
  if (!holds(key)) return;
  --rows_;
  auto& layer = active();
  layer.changes.insert_or_assign(key, std::nullopt);
  layer.rows = rows_;
}

void ShapeState::for_each(
    const std::function<bool(const std::string& key, const Row& row)>& fn) const {
  // The layers merged (newest wins), then walked beside the store's rows.
  std::map<std::string_view, const std::optional<Row>*> merged;
  for (auto layer = layers_.rbegin(); layer != layers_.rend(); ++layer) {
    for (const auto& [key, row] : layer->changes) merged.emplace(key, &row);
  }
  auto next = merged.begin();
  std::string key;
  bool stopped = false;
  // Layered rows before `upto` (all of them when nullopt).
  auto drain = [&](std::optional<std::string_view> upto) {
    for (; !stopped && next != merged.end() && (!upto || next->first < *upto); ++next) {
      if (!next->second->has_value()) continue;
      key.assign(next->first);
      stopped = !fn(key, **next->second);
    }
  };
  auto scanned =
      store_->scan(id_, nullptr, [&](std::string_view stored_key, std::string_view value) {
        drain(stored_key);
        if (stopped) return false;
        if (next != merged.end() && next->first == stored_key) {
          // Replaced or deleted in a layer.
          if (next->second->has_value()) {
            key.assign(stored_key);
            stopped = !fn(key, **next->second);
          }
          ++next;
          return !stopped;
        }
        auto row = decode_row(value);
        if (!row) return true;
        key.assign(stored_key);
        stopped = !fn(key, *row);
        return !stopped;
      });
  if (!scanned) spdlog::error("shapes: {}", scanned.error().to_string());
  drain(std::nullopt);
}

void ShapeState::seal(LogOffset through) {
  if (layers_.empty() || layers_.back().sealed) {
    // Nothing changed since, but the marker moves on (e.g. deletes of rows
    // the shape did not hold).
    if (through == committed_through_ && layers_.empty()) return;
    layers_.emplace_back();
    layers_.back().rows = rows_;
  }
  layers_.back().sealed = true;
  layers_.back().through = through;
}

Result<void> ShapeState::commit() {
  std::size_t sealed = 0;
  while (sealed < layers_.size() && layers_[sealed].sealed) ++sealed;
  if (sealed == 0) return {};
  const auto& last = layers_[sealed - 1];
  return write_layers(sealed, StateMarker{last.through, last.rows});
}

// Writes the oldest `count` layers (oldest first, so newer changes win) and
// the marker, as one batch; then they leave memory.
Result<void> ShapeState::write_layers(std::size_t count, std::optional<StateMarker> marker) {
  rocksdb::WriteBatch batch;
  for (std::size_t i = 0; i < count; ++i) {
    for (const auto& [key, row] : layers_[i].changes) {
      auto stored_key = StateStore::row_key(id_, key);
      if (row) {
        batch.Put(stored_key, encode_row(*row));
      } else {
        batch.Delete(stored_key);
      }
    }
  }
  if (marker) batch.Put(StateStore::marker_key(id_), StateStore::encode_marker(*marker));
  if (auto written = store_->write(batch); !written) {
    coalesce(count);
    return written;
  }
  layers_.erase(layers_.begin(), layers_.begin() + static_cast<std::ptrdiff_t>(count));
  if (marker) {
    committed_through_ = marker->through;
    committed_rows_ = marker->rows;
  }
  return {};
}

// The oldest `count` layers (sealed) become one, as they would be written:
// newer changes win, the last one's offset and row count. While the store
// refuses writes (a full disk), every sync seals another layer; unmerged,
// every lookup would walk them all.
void ShapeState::coalesce(std::size_t count) {
  if (count < 2) return;
  Layer& merged = layers_.front();
  for (std::size_t i = 1; i < count; ++i) {
    for (auto& [key, row] : layers_[i].changes)
      merged.changes.insert_or_assign(key, std::move(row));
  }
  merged.through = layers_[count - 1].through;
  merged.rows = layers_[count - 1].rows;
  merged.sealed = true;
  layers_.erase(layers_.begin() + 1, layers_.begin() + static_cast<std::ptrdiff_t>(count));
}

void ShapeState::set_loaded(const StateMarker& marker) {
  layers_.clear();
  rows_ = marker.rows;
  committed_rows_ = marker.rows;
  committed_through_ = marker.through;
}

Result<void> ShapeState::begin_bulk() {
  layers_.clear();
  bulk_batch_.Clear();
  bulk_batch_rows_ = 0;
  rows_ = 0;
  committed_through_ = LogOffset::start();
  bulk_ = true;
  rocksdb::WriteBatch batch;
  StateStore::drop(batch, id_);
  return store_->write(batch);
}

Result<void> ShapeState::bulk_insert(const std::string& key, const Row& row) {
  ++rows_;
  bulk_batch_.Put(StateStore::row_key(id_, key), encode_row(row));
  if (++bulk_batch_rows_ < kBulkBatchRows) return {};
  bulk_batch_rows_ = 0;
  auto written = store_->write(bulk_batch_);
  bulk_batch_.Clear();
  return written;
}

Result<void> ShapeState::end_bulk(LogOffset through) {
  bulk_ = false;
  if (bulk_batch_rows_ > 0) {
    bulk_batch_rows_ = 0;
    auto written = store_->write(bulk_batch_);
    bulk_batch_.Clear();
    if (!written) return written;
  }
  if (!layers_.empty()) layers_.back().sealed = true;
  auto written = write_layers(layers_.size(), StateMarker{through, rows_});
  // A big bulk's last rows sit in memtables (uncompressed, up to two write
  // buffers' worth, replayed from the log if the process died): into
  // compressed table files now. Small ones (many small shapes) are left to
  // fill the memtable first.
  if (written && rows_ >= kBulkBatchRows) store_->flush_soon();
  return written;
}

Result<void> ShapeState::drop() {
  layers_.clear();
  rows_ = 0;
  rocksdb::WriteBatch batch;
  StateStore::drop(batch, id_);
  return store_->write(batch);
}

}  // namespace shapeproxy::shapes
