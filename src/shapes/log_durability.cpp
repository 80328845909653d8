#include "shapes/log_durability.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "common/on_strand.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

LogDurability::LogDurability(asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                             Lifetime lifetime, LogDurabilityHooks hooks)
    : executor_(std::move(executor)),
      clock_(std::move(clock)),
      lifetime_(std::move(lifetime)),
      hooks_(std::move(hooks)),
      write_retry_(clock_->timer(executor_)) {}

void LogDurability::mark_dirty(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (shape->files()) dirty_.insert(shape);
}

void LogDurability::note_applied(replication::Lsn end_lsn) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  applied_end_lsn_ = std::max(applied_end_lsn_, end_lsn);
}

void LogDurability::forget(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  dirty_.erase(shape);
}

void LogDurability::stop() {
  stopped_ = true;
  sync_thread_.join();
}

void LogDurability::schedule_flush() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // Posted: transactions delivered in the same burst share one sync.
  asio::post(executor_, [this, weak = lifetime_()] {
    if (auto alive = weak.lock()) flush();
  });
}

// Group commit: the records of every transaction applied so far are handed
// to the OS here, on the strand; the fdatasync calls run on sync_thread_ so
// replication keeps flowing meanwhile, and whatever arrives during a sync is
// covered by the next one.
void LogDurability::flush() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  flush_scheduled_ = false;
  if (sync_in_flight_) {
    flush_after_sync_ = true;  // finish_flush() flushes again
    return;
  }
  Batch batch;
  std::vector<DurableEnd> ends;
  const std::uint64_t sealed = hooks_.sealing ? hooks_.sealing() : 0;
  for (const auto& shape : dirty_) {
    if (shape->phase() == Shape::Phase::kGone || !shape->files()) continue;
    if (auto written = shape->files()->write(); !written) {
      note_write_failure(shape, written.error());
      return;
    }
    if (hooks_.durable) {
      const auto last = shape->files()->written_last();
      ends.push_back(
          {shape, last ? std::optional(LogOffset::at(last->first, last->second)) : std::nullopt});
    }
    // Its rows changed so far are committed to the state store once these
    // records are durable (finish_flush), never before.
    shape->seal_state();
    batch.emplace_back(shape, shape->files()->pending_sync());
  }
  if (write_failing_) {
    write_failing_ = false;
    spdlog::info("shapes: shape logs are written again; the slot advances");
  }
  dirty_.clear();
  // A shape still taking its snapshot holds transactions that are not on disk.
  replication::Lsn durable = hooks_.holds_buffered() ? 0 : applied_end_lsn_;
  if (batch.empty()) {
    finish_flush({}, durable, std::nullopt, {}, sealed);
    return;
  }
  sync_in_flight_ = true;
  asio::post(
      sync_thread_, [this, weak = lifetime_(), executor = executor_, batch = std::move(batch),
                     durable, ends = std::move(ends), sealed]() mutable {
        std::optional<Error> failure;
        // Nothing may escape this thread (it would end the process).
        try {
          for (const auto& [shape, file] : batch) {
            if (auto synced = storage::ShapeFiles::sync_written(file); !synced) {
              failure = synced.error();
            }
          }
        } catch (const std::exception& thrown) {
          failure = Error{"internal", std::string("syncing shape logs: ") + thrown.what(), ""};
        }
        asio::post(executor, [this, weak, batch = std::move(batch), durable, failure,
                              ends = std::move(ends), sealed]() mutable {
          if (auto alive = weak.lock()) {
            finish_flush(std::move(batch), durable, failure, std::move(ends), sealed);
          }
        });
      });
}

// A shape's records could not be handed to the OS (no space, I/O error).
// Its file was cut back to the last whole write and the records stay
// queued; nothing past them is acknowledged to the slot, so PostgreSQL
// keeps the WAL and nothing is lost. Retried every second (and with every
// new transaction); logged once per episode.
StorageState LogDurability::storage_state() const {
  std::lock_guard lock(storage_mu_);
  return storage_;
}

void LogDurability::set_storage_failure(std::optional<Error> failure, bool holds_slot) {
  std::lock_guard lock(storage_mu_);
  if (!failure) {
    storage_.failing = false;
    storage_.holds_slot = false;
    storage_.error.clear();
    return;
  }
  if (!storage_.failing) storage_.since = std::chrono::system_clock::now();
  storage_.failing = true;
  storage_.holds_slot = holds_slot;
  storage_.error = failure->message;
}

void LogDurability::note_write_failure(const std::shared_ptr<Shape>& shape, const Error& error) {
  if (!write_failing_) {
    spdlog::error(
        "shapes: cannot write the log of {}: {}; transactions from here on are not "
        "acknowledged to the replication slot until it is written (retrying every second)",
        shape->handle(), error.to_string());
  }
  write_failing_ = true;
  set_storage_failure(error);
  retry_in_a_second();
}

void LogDurability::retry_in_a_second() {
  if (stopped_ || write_retry_armed_) return;
  write_retry_armed_ = true;
  write_retry_->wait_until(clock_->now() + std::chrono::seconds(1), [this, weak = lifetime_()] {
    auto alive = weak.lock();
    if (!alive) return;
    write_retry_armed_ = false;
    schedule_flush();
  });
}

void LogDurability::finish_flush(Batch synced, replication::Lsn durable_lsn,
                                 std::optional<Error> failure, std::vector<DurableEnd> ends,
                                 std::uint64_t sealed) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  sync_in_flight_ = false;
  if (failure) {
    spdlog::error("shapes: cannot make shape logs durable: {}; the slot will not advance",
                  failure->to_string());
    for (const auto& [shape, file] : synced) dirty_.insert(shape);  // try again
    set_storage_failure(*failure);
    retry_in_a_second();
    return;
  }
  // The row state store is committed here, after the logs it must agree
  // with are durable and before the slot may confirm them.
  std::optional<Error> store_failure;
  for (const auto& [shape, file] : synced) {
    if (shape->phase() == Shape::Phase::kGone || !shape->files()) continue;
    shape->files()->mark_synced(file);
    if (hooks_.skip_state_commit && hooks_.skip_state_commit()) continue;
    if (auto committed = shape->commit_state(); !committed) {
      // The store lags the log: harmless (the tail is replayed at load), so
      // the slot still advances; the rows wait in memory, retried a second
      // later (or with the next transaction); no compaction meanwhile.
      if (!store_failing_ && !store_failure) {
        spdlog::error(
            "shapes: cannot store the rows of {}: {}; its log is durable, the rows wait in "
            "memory (retrying every second)",
            shape->handle(), committed.error().to_string());
      }
      store_failure = committed.error();
      dirty_.insert(shape);
      continue;
    }
    hooks_.synced(shape);
  }
  if (store_failure) {
    store_failing_ = true;
    set_storage_failure(store_failure, /*holds_slot=*/false);
    retry_in_a_second();
  } else {
    if (std::exchange(store_failing_, false)) {
      spdlog::info("shapes: the rows of every shape are stored again");
    }
    set_storage_failure(std::nullopt);  // written, synced and stored
  }
  if (durable_lsn > 0) {
    std::lock_guard lock(storage_mu_);
    storage_.durable_lsn = std::max(storage_.durable_lsn, durable_lsn);
  }
  if (hooks_.on_durable && durable_lsn > 0) hooks_.on_durable(durable_lsn);
  if (hooks_.durable) {
    std::erase_if(ends, [](const DurableEnd& each) {
      return each.shape->phase() == Shape::Phase::kGone || !each.shape->files();
    });
    hooks_.durable(ends, sealed);
  }
  // Shapes left dirty by a failed store write wait for the retry.
  if (std::exchange(flush_after_sync_, false) || (!dirty_.empty() && !store_failure)) {
    schedule_flush();
  }
}

}  // namespace shapeproxy::shapes
