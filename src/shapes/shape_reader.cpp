#include "shapes/shape_reader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "common/on_strand.h"
#include "shapes/fallback_refresher.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

ShapeReader::ShapeReader(asio::any_io_executor executor, Lifetime lifetime,
                         const FallbackRefresher& fallback)
    : ShapeReader(std::move(executor), std::move(lifetime),
                  [&fallback] { return fallback.active(); }) {}

ShapeReader::ShapeReader(asio::any_io_executor executor, Lifetime lifetime,
                         std::function<bool()> fallback_active)
    : executor_(std::move(executor)),
      lifetime_(std::move(lifetime)),
      fallback_active_(std::move(fallback_active)) {}

void ShapeReader::note_commit(replication::Lsn commit_lsn) {
  // The next commit record starts past this one's end.
  last_seen_lsn_ = std::max(last_seen_lsn_, commit_lsn + 1);
}

void ShapeReader::note_progress(replication::Lsn wal_end) {
  // Every commit before wal_end was delivered; the next one starts at or
  // after it, and WAL records are 8-byte aligned.
  if (wal_end > 0) last_seen_lsn_ = std::max(last_seen_lsn_, wal_end - 1);
}

void ShapeReader::note_logged(replication::Lsn lsn) {
  // up-to-date's global_last_seen_lsn: after the group just logged (as
  // after a replicated commit).
  last_seen_lsn_ = std::max(last_seen_lsn_, lsn);
}

ReadResult ShapeReader::result(const Shape& shape, LogOffset offset,
                               std::shared_ptr<const std::string> body, bool up_to_date) const {
  ReadResult out;
  out.handle = shape.handle();
  out.offset = offset;
  out.body = std::move(body);
  out.up_to_date = up_to_date;
  out.schema_json = shape.schema_json();
  out.fallback = fallback_active_();
  return out;
}

ReadResult ShapeReader::up_to_date(const Shape& shape, LogOffset offset,
                                   std::shared_ptr<const std::string> body) const {
  return result(shape, offset, std::move(body), true);
}

ReadResult ShapeReader::streaming(const Shape& shape, std::shared_ptr<BodyStream> stream) const {
  // A new shape is never compacted: its first chunk is snapshot chunk 0,
  // whatever it holds.
  ReadResult out = result(shape, LogOffset::snapshot_chunk(0), nullptr, false);
  out.streaming = std::move(stream);
  return out;
}

std::shared_ptr<const std::string> ShapeReader::up_to_date_body() const {
  return std::make_shared<const std::string>("[" + up_to_date_json() + "]");
}

std::string ShapeReader::up_to_date_json() const {
  // SSE clients continue from "<global_last_seen_lsn>_0", so the value lies
  // after every operation delivered (<commit lsn>_<n>) and before every one
  // to come; see note_progress() and note_commit().
  return "{\"headers\":{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"" +
         std::to_string(last_seen_lsn_) + "\"}}";
}

bool ShapeReader::beyond_seen(const Shape& shape, const ReadRequest& request) const {
  // Operations sit at commit LSNs, up-to-date at global_last_seen_lsn, so a
  // live read parked further would skip the operations others receive. But
  // a proxy restarted after a crash hands out offsets again only as its
  // stream catches up (the slot replays from its last acknowledged
  // position, below the global_last_seen_lsn sent before the crash): that
  // is why live reads wait before they are refused. Before the stream has
  // reported a position since start, last_seen_lsn_ is not known.
  if (request.start != ReadRequest::Start::kAt || request.offset.is_snapshot()) return false;
  if (last_seen_lsn_ == 0) return false;
  return request.offset.tx > std::max<std::uint64_t>(last_seen_lsn_, shape.log().end().tx);
}

std::optional<ReadOutcome> ShapeReader::read_now(Shape& shape, const ReadRequest& request,
                                                 std::shared_ptr<LogDiskRead>* disk) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  const ShapeLog& log = shape.log();
  if (request.start == ReadRequest::Start::kNow) {
    return result(shape, log.end(), up_to_date_body(), true);
  }
  LogOffset after =
      request.start == ReadRequest::Start::kBeforeAll ? LogOffset::start() : request.offset;
  // A live read there waits first (LiveParking::park_ahead); what is still
  // past everything when asked is a 400, as Electric answers.
  if (beyond_seen(shape, request)) return out_of_bounds();
  // Before a compaction point (or past the snapshot): the client resyncs.
  if (!log.contains(after)) return MustRefetch{shape.handle()};
  auto slice = log.read_after(after);
  if (slice.error) {
    spdlog::error("shapes: cannot read {} from disk: {}", shape.handle(), *slice.error);
    return Unavailable{"cannot read the shape log from disk; retry shortly"};
  }
  if (slice.on_disk) {  // older than the in-memory tail: read off the strand
    auto plan = shape.plan_disk_read(after);
    if (!plan) {
      spdlog::error("shapes: cannot read {} from disk: {}", shape.handle(),
                    plan.error().to_string());
      return Unavailable{"cannot read the shape log from disk; retry shortly"};
    }
    *disk = std::move(plan).value();
    return std::nullopt;
  }
  if (slice.chunk) return result(shape, slice.last, slice.chunk, false);
  if (slice.stored.file) {  // on disk: not read here (the HTTP layer sends it from the file)
    ReadResult stored = result(shape, slice.last, nullptr, false);
    stored.stored = std::move(slice.stored);
    if (damaged_chunk_) {
      stored.chunk_damaged = [executor = executor_, weak = lifetime_(), hook = damaged_chunk_,
                              handle = shape.handle()] {
        asio::post(executor, [weak, hook, handle] {
          if (auto alive = weak.lock()) hook(handle);
        });
      };
    }
    return stored;
  }
  if (slice.entries.empty() && request.live) return std::nullopt;  // park
  std::string body = "[";
  for (const auto& entry : slice.entries) {
    if (body.size() > 1) body += ',';
    body.append(entry);
  }
  close_body(body, slice.entries.size(), slice.reached_end ? up_to_date_json() : std::string());
  return result(shape, slice.last, std::make_shared<const std::string>(std::move(body)),
                slice.reached_end);
}

// Operations no longer in the shape's memory tail: read on read_pool_, the
// answer given back on the strand (where tickets live).
void ShapeReader::read_from_disk(const std::shared_ptr<Shape>& shape,
                                 std::shared_ptr<LogDiskRead> plan,
                                 const std::shared_ptr<ReadTicket>& ticket) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  asio::post(read_pool_, [this, weak = lifetime_(), executor = executor_, shape, ticket,
                          plan = std::move(plan)] {
    auto slice = plan->run();
    asio::post(executor, [this, weak, shape, ticket, slice = std::move(slice)]() mutable {
      auto alive = weak.lock();
      if (!alive || ticket->finished || ticket->cancelled) return;
      if (!slice) {
        spdlog::error("shapes: cannot read {} from disk: {}", shape->handle(),
                      slice.error().to_string());
        ticket->finish(Unavailable{"cannot read the shape log from disk; retry shortly"});
        return;
      }
      if (shape->phase() == Shape::Phase::kGone) {
        ticket->finish(MustRefetch{});
        return;
      }
      auto& read = slice.value();
      close_body(read.body, read.count, read.reached_end ? up_to_date_json() : std::string());
      ticket->finish(result(*shape, read.last,
                            std::make_shared<const std::string>(std::move(read.body)),
                            read.reached_end));
    });
  });
}

}  // namespace shapeproxy::shapes
