#include "cluster/follower_shapes.h"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/clock.h"
#include "common/error_codes.h"
#include "common/no_throw.h"
#include "common/on_strand.h"
#include "pg/async_connection.h"
#include "shapes/shape_definition.h"
#include "shapes/shape_meta.h"
#include "storage/shape_files.h"

namespace shapeproxy::cluster {
namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using shapes::LogOffset;
using shapes::ReadOutcome;
using shapes::ReadRequest;

namespace {

constexpr auto kTick = 250ms;

// What the HTTP layer relays to the leader.
shapes::Unavailable elsewhere() {
  shapes::Unavailable out{"this instance does not hold that yet", std::chrono::seconds(1)};
  out.elsewhere = true;
  return out;
}

std::optional<LogOffset> end_from_json(const nlohmann::json& value) {
  if (!value.is_string()) return std::nullopt;
  return LogOffset::parse(value.get<std::string>());
}

std::uint64_t lsn_from_json(const nlohmann::json& message) {
  auto found = message.find("l");
  if (found == message.end() || !found->is_string()) return 0;
  try {
    return std::stoull(found->get<std::string>());
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

FollowerShapes::FollowerShapes(asio::io_context& io, FollowerShapesOptions options,
                               FetchEnds fetch_ends)
    : io_(io),
      strand_(asio::make_strand(io)),
      options_(std::move(options)),
      fetch_ends_(std::move(fetch_ends)),
      reader_(strand_, lifetime(), [this] { return fallback_; }),
      parking_(strand_, shapeproxy::steady_clock(), lifetime(), reader_, options_.live_timeout),
      ticker_(strand_) {}

FollowerShapes::~FollowerShapes() {
  files_.join();
  reader_.stop();
}

shapes::Lifetime FollowerShapes::lifetime() {
  return [this] { return std::weak_ptr<const void>(weak_from_this()); };
}

void FollowerShapes::start() {
  auto self = shared_from_this();
  asio::co_spawn(
      strand_, [self] { return self->listen(); }, asio::detached);
  asio::post(strand_, [self] { self->tick(); });
}

void FollowerShapes::stop(std::function<void()> done) {
  asio::post(strand_, [self = shared_from_this(), done = std::move(done)] {
    self->stopped_ = true;
    self->ticker_.cancel();
    if (self->connection_) self->connection_->cancel();
    self->parking_.release_all();
    self->update_serving();
    // Work on these threads only posts back here: joining cannot wait on us.
    self->files_.join();
    self->reader_.stop();
    if (done) done();
  });
}

std::function<void()> FollowerShapes::read(shapes::ShapeDefinitionRequest definition,
                                           ReadRequest request,
                                           std::function<void(ReadOutcome)> done) {
  auto ticket = std::make_shared<shapes::ReadTicket>();
  // Runs on the strand (tickets are finished there). Only a result the
  // leader would give goes out; anything else is the leader's to answer.
  ticket->done = [weak = weak_from_this(), done = std::move(done)](ReadOutcome outcome) {
    auto self = weak.lock();
    auto* result = std::get_if<shapes::ReadResult>(&outcome);
    if (!self || !result || (result->up_to_date && !self->confirmed_end(*result))) {
      return done(elsewhere());
    }
    self->served_.fetch_add(1, std::memory_order_relaxed);
    done(std::move(outcome));
  };
  asio::post(strand_,
             [self = shared_from_this(), definition = std::move(definition),
              request = std::move(request), ticket] { self->serve(definition, request, ticket); });
  // Held weakly, as the registry's: `done` may capture it (see ShapeService).
  return [strand = strand_, weak = std::weak_ptr<shapes::ReadTicket>(ticket)] {
    asio::post(strand, [weak] {
      auto ticket = weak.lock();
      if (!ticket) return;
      ticket->cancelled = true;
      if (auto unpark = std::exchange(ticket->unpark, nullptr)) unpark();
    });
  };
}

void FollowerShapes::remove(shapes::ShapeDefinitionRequest, std::optional<std::string>,
                            std::function<void(Result<shapes::DeleteOutcome>)> done) {
  done(Error{"internal", "a follower does not delete shapes (the leader does)", ""});
}

void FollowerShapes::serve(const shapes::ShapeDefinitionRequest& definition,
                           const ReadRequest& request,
                           const std::shared_ptr<shapes::ReadTicket>& ticket) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  if (ticket->cancelled) return;
  auto shape = view_for(definition, request);
  if (!shape) return ticket->finish(elsewhere());
  std::shared_ptr<shapes::LogDiskRead> disk;
  if (auto outcome = reader_.read_now(*shape, request, &disk)) {
    return ticket->finish(std::move(*outcome));
  }
  if (disk) return reader_.read_from_disk(shape, std::move(disk), ticket);
  // Nothing new: parked only while the view holds the last announced end
  // (else the leader may already have more).
  if (!confirmed(shape->handle())) return ticket->finish(elsewhere());
  parking_.park(shape, request.offset, ticket);
}

std::shared_ptr<shapes::Shape> FollowerShapes::view_for(
    const shapes::ShapeDefinitionRequest& definition, const ReadRequest& request) const {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  if (!serving() || request.start == ReadRequest::Start::kNow) return nullptr;
  const std::string key = request_key(definition);
  std::string handle;
  if (request.handle) {
    handle = *request.handle;
  } else {
    auto found = by_request_.find(key);
    if (request.start != ReadRequest::Start::kBeforeAll || found == by_request_.end() ||
        found->second.size() != 1) {
      return nullptr;
    }
    handle = *found->second.begin();
  }
  auto view = views_.find(handle);
  if (view == views_.end() || view->second.request_key != key) return nullptr;
  const auto& shape = view->second.shape;
  // A client ahead of this view (it read the leader's newer end).
  if (request.start == ReadRequest::Start::kAt && request.offset > shape->log().end()) {
    return nullptr;
  }
  return shape;
}

bool FollowerShapes::confirmed(const std::string& handle) const {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  auto view = views_.find(handle);
  auto end = ends_.find(handle);
  return view != views_.end() && end != ends_.end() && !view->second.behind &&
         view->second.through == end->second;
}

// An up-to-date answer stands only at the view's current end, and only
// while that end is the last announced (a disk read planned on an older
// view may finish after a newer one was adopted, with a newer lsn).
bool FollowerShapes::confirmed_end(const shapes::ReadResult& result) const {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  auto view = views_.find(result.handle);
  return confirmed(result.handle) && view->second.shape->log().end() == result.offset;
}

std::string FollowerShapes::request_key(const shapes::ShapeDefinitionRequest& request) {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& [index, value] : request.params) params[std::to_string(index)] = value;
  return nlohmann::json::array(
             {request.schema, request.table,
              request.where ? nlohmann::json(*request.where) : nlohmann::json(nullptr), params,
              request.columns ? nlohmann::json(*request.columns) : nlohmann::json(nullptr),
              static_cast<int>(request.replica), static_cast<int>(request.log)})
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<FollowerShapes::MetaStamp> FollowerShapes::stamp_of(const fs::path& dir) {
  struct stat info {};
  if (::stat((dir / "meta.json").c_str(), &info) != 0) return std::nullopt;
  return MetaStamp{
      static_cast<std::uint64_t>(info.st_ino),
      static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec,
      static_cast<std::uint64_t>(info.st_size)};
}

// On the files thread. A few tries when a compaction switches the files
// while they are opened.
FollowerShapes::Opened FollowerShapes::open_view(const fs::path& dir, std::string handle,
                                                 std::optional<LogOffset> announced,
                                                 std::size_t chunk_bytes) {
  Opened out;
  out.handle = std::move(handle);
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto stamp = stamp_of(dir);
    if (!stamp) {
      out.gone = true;
      out.error = "it was removed";
      return out;
    }
    out.stamp = *stamp;
    auto opened = storage::ShapeFiles::open_read_only(dir);
    if (!opened) {
      out.error = opened.error().to_string();
      if (opened.error().code == error_codes::kStorageChanged) continue;
      return out;
    }
    auto [files, stored] = std::move(opened).value();
    auto meta = shapes::shape_meta_from_json(stored.meta);
    if (!meta) {
      out.error = meta.error().to_string();
      return out;
    }
    if (meta->handle != out.handle || !meta->snapshot) {
      out.error = "its snapshot is not stored yet";
      return out;
    }
    auto table = std::make_shared<const shapes::TableSchema>(meta->table);
    auto made = shapes::ShapeDefinition::make(meta->request, table);
    if (auto* invalid = std::get_if<shapes::InvalidRequest>(&made)) {
      out.error = invalid->message;
      return out;
    }
    std::optional<LogOffset> scanned;
    if (stored.last_operation) {
      scanned = LogOffset::at(stored.last_operation->first, stored.last_operation->second);
    }
    // Through the announced end when the files hold it (never further).
    if (!announced || (scanned && *scanned >= *announced)) {
      out.through = announced;
    } else {
      out.through = scanned;
      out.behind = true;
    }
    out.shape = shapes::Shape::open_read_only(std::get<shapes::ShapeDefinition>(std::move(made)),
                                              *meta, std::move(stored), std::move(files),
                                              chunk_bytes, out.through);
    out.error.clear();
    return out;
  }
  return out;
}

void FollowerShapes::open_soon(const std::string& handle) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  to_open_.insert(handle);
  open_queued();
}

void FollowerShapes::open_queued() {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  if (opening_ || to_open_.empty() || stopped_) return;
  opening_ = true;
  std::vector<std::pair<std::string, std::optional<LogOffset>>> batch;
  for (const auto& handle : to_open_) {
    auto end = ends_.find(handle);
    if (end != ends_.end()) batch.emplace_back(handle, end->second);
  }
  to_open_.clear();
  asio::post(files_, [weak = weak_from_this(), strand = strand_, batch = std::move(batch),
                      dir = options_.shapes_dir, chunk_bytes = options_.chunk_bytes] {
    std::vector<Opened> opened;
    for (const auto& [handle, end] : batch) {
      opened.push_back(open_view(dir / handle, handle, end, chunk_bytes));
    }
    asio::post(strand, [weak, opened = std::move(opened)]() mutable {
      auto self = weak.lock();
      if (!self) return;
      self->opening_ = false;
      for (auto& each : opened) self->adopt(std::move(each));
      self->open_queued();
    });
  });
}

void FollowerShapes::adopt(Opened opened) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  auto end = ends_.find(opened.handle);
  if (end == ends_.end() || stopped_) return;  // removed meanwhile
  if (opened.gone) return drop_view(opened.handle);
  if (!opened.shape) {
    return;  // relayed; tried again with its next announcement or meta poll
  }
  // Announced further while it was opened: open again (it serves what it
  // holds meanwhile, but answers nothing at its end).
  if (opened.through != end->second) opened.behind = true;
  auto& view = views_[opened.handle];
  if (view.shape) {
    view.shape->adopt_view(*opened.shape);
  } else {
    view.shape = std::move(opened.shape);
    view.request_key = request_key(view.shape->definition().request);
    by_request_[view.request_key].insert(opened.handle);
  }
  view.through = opened.through;
  view.behind = opened.behind;
  view.stamp = opened.stamp;
  parking_.wake(view.shape);
}

void FollowerShapes::drop_view(const std::string& handle) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  auto view = views_.find(handle);
  if (view == views_.end()) return;
  auto shape = std::move(view->second.shape);
  auto keyed = by_request_.find(view->second.request_key);
  if (keyed != by_request_.end()) {
    keyed->second.erase(handle);
    if (keyed->second.empty()) by_request_.erase(keyed);
  }
  views_.erase(view);
  shape->mark_gone();
  parking_.wake(shape);  // its parked reads go to the leader
}

asio::awaitable<void> FollowerShapes::listen() {
  auto self = shared_from_this();
  asio::steady_timer retry(strand_);
  bool warned = false;
  while (!stopped_) {
    auto connected = co_await pg::AsyncConnection::connect(strand_, options_.conninfo, 5s);
    std::unique_ptr<pg::AsyncConnection> connection;
    if (connected) {
      connection = std::move(connected).value();
      auto listening = co_await connection->query("LISTEN " + options_.channel);
      if (!listening) {
        connected = listening.error();
        connection.reset();
      }
    }
    if (!connection) {
      if (!std::exchange(warned, true)) {
        spdlog::warn("cluster: follower cannot listen to the leader: {}; relaying meanwhile",
                     connected ? "LISTEN failed" : connected.error().to_string());
      }
      retry.expires_after(500ms);
      co_await retry.async_wait(kNoThrow);
      continue;
    }
    if (stopped_) break;
    warned = false;
    connection_ = connection.get();
    listening_ = true;
    synced_ = false;
    pending_.clear();
    request_snapshot();
    while (!stopped_) {
      auto readable = co_await connection->wait_readable();
      if (!readable) break;
      while (PGnotify* notice = PQnotifies(connection->native())) {
        std::string payload = notice->extra;
        PQfreemem(notice);
        on_message(payload);
      }
    }
    connection_ = nullptr;
    listening_ = false;
    lose_step("the listening connection ended");
  }
}

void FollowerShapes::request_snapshot() {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  if (fetching_ || !listening_ || stopped_) return;
  fetching_ = true;
  fetch_ends_([weak = weak_from_this(), strand = strand_](Result<std::string> body) {
    asio::post(strand, [weak, body = std::move(body)]() mutable {
      if (auto self = weak.lock()) self->on_snapshot(std::move(body));
    });
  });
}

void FollowerShapes::on_snapshot(Result<std::string> body) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  fetching_ = false;
  if (!listening_ || stopped_) return;
  nlohmann::json snapshot =
      body ? nlohmann::json::parse(body.value(), nullptr, false) : nlohmann::json();
  if (!snapshot.is_object() || !snapshot["e"].is_string() || !snapshot["q"].is_number_unsigned() ||
      !snapshot["s"].is_object()) {
    spdlog::debug("cluster: follower: no snapshot of ends from the leader ({}); retrying",
                  body ? "not one" : body.error().to_string());
    return;  // tick() asks again
  }
  epoch_ = snapshot["e"].get<std::string>();
  next_seq_ = snapshot["q"].get<std::uint64_t>() + 1;
  last_seen_ = std::max(last_seen_, lsn_from_json(snapshot));
  reader_.note_logged(last_seen_);
  fallback_ = snapshot["f"].is_boolean() && snapshot["f"].get<bool>();
  ends_.clear();
  for (const auto& [handle, end] : snapshot["s"].items()) ends_[handle] = end_from_json(end);
  std::vector<std::string> gone;
  for (const auto& [handle, view] : views_) {
    if (!ends_.count(handle)) gone.push_back(handle);
  }
  for (const auto& handle : gone) drop_view(handle);
  synced_ = true;
  last_heard_ = std::chrono::steady_clock::now();
  for (const auto& [handle, end] : ends_) {
    auto view = views_.find(handle);
    if (view == views_.end() || view->second.through != end || view->second.behind) {
      to_open_.insert(handle);
    }
  }
  auto heard = std::move(pending_);
  pending_.clear();
  for (const auto& message : heard) {
    if (!synced_) break;
    on_message(message.dump());
  }
  open_queued();
  update_serving();
}

void FollowerShapes::on_message(const std::string& payload) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  auto message = nlohmann::json::parse(payload, nullptr, false);
  if (!message.is_object() || !message["e"].is_string() || !message["q"].is_number_unsigned()) {
    spdlog::warn("cluster: follower: ignoring a malformed announcement");
    return;
  }
  if (!synced_) {
    pending_.push_back(std::move(message));
    request_snapshot();
    return;
  }
  const auto seq = message["q"].get<std::uint64_t>();
  if (message["e"].get<std::string>() != epoch_ || seq > next_seq_) {
    // Another leader, or a message missed: start over from a snapshot.
    lose_step("an announcement was missed");
    pending_.push_back(std::move(message));
    request_snapshot();
    return;
  }
  last_heard_ = std::chrono::steady_clock::now();
  if (seq < next_seq_) return;  // already in the snapshot (or sent twice)
  ++next_seq_;
  apply_message(message);
  update_serving();
}

void FollowerShapes::apply_message(const nlohmann::json& message) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  const bool fallback = message["f"].is_boolean() && message["f"].get<bool>();
  if (fallback && !fallback_) {
    // The leader refreshes only the shapes it sees read: reads go there.
    fallback_ = true;
    parking_.release_all();
  }
  fallback_ = fallback;
  if (message["s"].is_array()) {
    for (const auto& entry : message["s"]) {
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string()) continue;
      const auto handle = entry[0].get<std::string>();
      ends_[handle] = end_from_json(entry[1]);
      to_open_.insert(handle);
    }
  }
  if (message["g"].is_array()) {
    for (const auto& handle : message["g"]) {
      if (!handle.is_string()) continue;
      ends_.erase(handle.get<std::string>());
      drop_view(handle.get<std::string>());
    }
  }
  // After the ends it goes with: a view not yet reopened is behind them,
  // so nothing at its end is answered until it is.
  last_seen_ = std::max(last_seen_, lsn_from_json(message));
  reader_.note_logged(last_seen_);
  open_queued();
}

void FollowerShapes::lose_step(const char* why) {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  const bool was = serving();
  synced_ = false;
  update_serving();
  if (was) {
    spdlog::info("cluster: follower relays every read to the leader for now: {}", why);
    parking_.release_all();
  }
}

void FollowerShapes::update_serving() {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  const bool now = !stopped_ && listening_ && synced_ && !fallback_ &&
                   std::chrono::steady_clock::now() - last_heard_ < options_.silence;
  const bool was = serving_.exchange(now, std::memory_order_relaxed);
  if (now && !was) spdlog::info("cluster: follower serves reads of the shared shapes itself");
}

void FollowerShapes::tick() {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  if (stopped_) return;
  if (serving() && std::chrono::steady_clock::now() - last_heard_ >= options_.silence) {
    lose_step("the leader has not been heard from");
  }
  update_serving();
  if (listening_ && !synced_) request_snapshot();
  // Views behind their announced end: the files may show it now.
  for (const auto& [handle, view] : views_) {
    if (view.behind) to_open_.insert(handle);
  }
  open_queued();
  if (std::chrono::steady_clock::now() >= next_meta_poll_) {
    next_meta_poll_ = std::chrono::steady_clock::now() + options_.meta_poll;
    poll_meta();
  }
  ticker_.expires_after(kTick);
  ticker_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->tick();
  });
}

// A view whose meta.json changed (a compaction switched its files, or the
// shape went away) is opened again: the safety net besides announcements.
void FollowerShapes::poll_meta() {
  SHAPEPROXY_ASSERT_ON_STRAND(strand_);
  std::vector<std::pair<std::string, MetaStamp>> stamps;
  for (const auto& [handle, view] : views_) stamps.emplace_back(handle, view.stamp);
  if (stamps.empty()) return;
  asio::post(files_, [weak = weak_from_this(), strand = strand_, stamps = std::move(stamps),
                      dir = options_.shapes_dir] {
    std::vector<std::string> changed;
    for (const auto& [handle, stamp] : stamps) {
      if (stamp_of(dir / handle) != std::optional(stamp)) changed.push_back(handle);
    }
    if (changed.empty()) return;
    asio::post(strand, [weak, changed = std::move(changed)] {
      auto self = weak.lock();
      if (!self) return;
      for (const auto& handle : changed) self->to_open_.insert(handle);
      self->open_queued();
    });
  });
}

}  // namespace shapeproxy::cluster
