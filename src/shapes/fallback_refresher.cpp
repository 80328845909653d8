#include "shapes/fallback_refresher.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>

#include "common/error_codes.h"
#include "common/on_strand.h"
#include "common/text.h"
#include "shapes/on_exception.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

namespace {
// A shape read this recently is refreshed in every poll.
constexpr auto kRecentlyRead = std::chrono::minutes(5);
}  // namespace

FallbackRefresher::FallbackRefresher(asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                                     Lifetime lifetime, FallbackRows rows,
                                     std::chrono::milliseconds poll_interval,
                                     FallbackRefresherHooks hooks)
    : executor_(std::move(executor)),
      clock_(std::move(clock)),
      lifetime_(std::move(lifetime)),
      rows_(std::move(rows)),
      poll_interval_(poll_interval),
      hooks_(std::move(hooks)),
      pause_(clock_->timer(executor_)) {}

void FallbackRefresher::set_active(bool fallback) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (fallback == active_) return;
  active_ = fallback;
  refusals_.clear();
  spdlog::info("shapes: serving {}", fallback ? "from direct queries (fallback)" : "live");
  if (fallback && rows_ && !loop_running_) {
    loop_running_ = true;
    start_round();
  }
}

void FallbackRefresher::start_round() {
  asio::co_spawn(
      executor_,
      [this, keep = lifetime_().lock()]() -> asio::awaitable<void> {
        if (!keep) co_return;
        const auto started = clock_->now();
        for (const auto& shape : hooks_.active_shapes(started - kRecentlyRead)) {
          co_await refresh(shape);
        }
        pause_->wait_until(started + poll_interval_, [this, weak = lifetime_()] {
          auto alive = weak.lock();
          if (!alive) return;
          if (active_) {
            start_round();
          } else {
            loop_running_ = false;
          }
        });
      },
      on_exception(executor_, "the fallback loop", [this, weak = lifetime_()] {
        if (auto alive = weak.lock()) loop_running_ = false;
      }));
}

void FallbackRefresher::refresh_all(std::vector<std::shared_ptr<Shape>> shapes) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (!rows_) return;
  asio::co_spawn(
      executor_,
      [this, keep = lifetime_().lock(), shapes = std::move(shapes)]() -> asio::awaitable<void> {
        if (!keep) co_return;
        for (const auto& shape : shapes) co_await refresh(shape);
      },
      on_exception(executor_, "refreshing every shape"));
}

asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> FallbackRefresher::query(
    const ShapeDefinition& definition, RowsObserver on_rows) {
  return rows_(definition, std::move(on_rows));
}

asio::awaitable<void> FallbackRefresher::refresh(std::shared_ptr<Shape> shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (shape->phase() != Shape::Phase::kReady) co_return;
  const auto mark = shape->begin_refresh();
  auto rows = co_await rows_(shape->definition(), {});
  note_refusal(shape, rows ? Error{} : rows.error());
  if (!rows) {
    shape->end_refresh();
    spdlog::debug("shapes: refreshing {} failed: {}", shape->handle(),
                  text::log_safe(rows.error().to_string()));
    co_return;
  }
  if (shape->phase() != Shape::Phase::kReady) {
    shape->end_refresh();
    co_return;
  }
  auto grew = shape->apply_refresh(**rows, mark, hooks_.floor ? hooks_.floor() : 0);
  shape->end_refresh();
  if (!grew) {
    spdlog::warn("shapes: refreshing {} failed: {}", shape->handle(), grew.error().to_string());
    co_return;
  }
  if (!grew.value()) co_return;
  hooks_.grew(shape);
}

void FallbackRefresher::note_refusal(const std::shared_ptr<Shape>& shape, const Error& outcome) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  std::erase_if(refusals_, [](const auto& entry) { return entry.second.first.expired(); });
  if (outcome.code != error_codes::kOverloaded) {
    // Served, or failed otherwise (database unreachable: what the shape
    // holds is served, flagged).
    refusals_.erase(shape.get());
    return;
  }
  auto retry_after = std::chrono::ceil<std::chrono::seconds>(poll_interval_);
  Unavailable refused{"overloaded: " + outcome.message + "; retry after " +
                          std::to_string(std::max<std::int64_t>(1, retry_after.count())) + " s",
                      std::max(retry_after, std::chrono::seconds(1))};
  refusals_[shape.get()] = {shape, std::move(refused)};
}

std::optional<Unavailable> FallbackRefresher::refusal(const std::shared_ptr<Shape>& shape) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = refusals_.find(shape.get());
  if (it == refusals_.end() || it->second.first.lock() != shape) return std::nullopt;
  return it->second.second;
}

}  // namespace shapeproxy::shapes
