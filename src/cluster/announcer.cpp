#include "cluster/announcer.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cluster/election.h"
#include "common/no_throw.h"
#include "pg/async_connection.h"

namespace shapeproxy::cluster {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

nlohmann::json end_json(const std::optional<shapes::LogOffset>& end) {
  return end ? nlohmann::json(end->to_string()) : nlohmann::json(nullptr);
}

}  // namespace

Announcer::Announcer(asio::io_context& io, std::string conninfo, std::string channel,
                     std::string epoch, std::chrono::milliseconds heartbeat)
    : strand_(asio::make_strand(io)),
      conninfo_(std::move(conninfo)),
      channel_(std::move(channel)),
      epoch_(std::move(epoch)),
      heartbeat_(heartbeat),
      timer_(strand_) {}

std::string Announcer::channel_for(std::string_view slot) {
  char name[40];
  std::snprintf(name, sizeof name, "shapeproxy_%016llx",
                static_cast<unsigned long long>(
                    static_cast<std::uint64_t>(Election::lock_key(std::string(slot)))));
  return name;
}

void Announcer::start() {
  asio::co_spawn(
      strand_, [self = shared_from_this()] { return self->run(); }, asio::detached);
}

void Announcer::stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  wake();
}

void Announcer::seed(std::uint64_t last_seen, ShapeEnds ends) {
  std::lock_guard lock(mu_);
  last_seen_ = std::max(last_seen_, last_seen);
  ends_.clear();
  for (auto& [handle, end] : ends) ends_[handle] = end;
}

void Announcer::durable(std::uint64_t last_seen, ShapeEnds ends) {
  {
    std::lock_guard lock(mu_);
    for (const auto& [handle, end] : ends) ends_[handle] = end;
    // Parts before the last carry the lsn announced before this batch.
    queue(ends, {});
    last_seen_ = std::max(last_seen_, last_seen);
    // The batch's lsn goes with its last part: patch it in.
    if (!outbox_.empty()) {
      auto last = nlohmann::json::parse(outbox_.back());
      last["l"] = std::to_string(last_seen_);
      outbox_.back() = last.dump();
    }
  }
  wake();
}

void Announcer::removed(std::string handle) {
  {
    std::lock_guard lock(mu_);
    ends_.erase(handle);
    queue({}, {std::move(handle)});
  }
  wake();
}

void Announcer::set_fallback(bool fallback) {
  {
    std::lock_guard lock(mu_);
    if (fallback_ == fallback) return;
    fallback_ = fallback;
    queue({}, {});
  }
  wake();
}

// Under mu_. One message per kMaxPayload bytes of entries (at least one).
void Announcer::queue(const ShapeEnds& ends, std::vector<std::string> removed) {
  auto message = [&] {
    nlohmann::json part;
    part["e"] = epoch_;
    part["q"] = ++seq_;
    part["l"] = std::to_string(last_seen_);
    part["f"] = fallback_;
    part["s"] = nlohmann::json::array();
    part["g"] = nlohmann::json::array();
    return part;
  };
  auto part = message();
  std::size_t bytes = part.dump().size();
  bool empty = true;
  auto add = [&](const char* field, nlohmann::json entry) {
    const std::size_t size = entry.dump().size() + 1;
    if (!empty && bytes + size > kMaxPayload) {
      outbox_.push_back(part.dump());
      part = message();
      bytes = part.dump().size();
    }
    part[field].push_back(std::move(entry));
    bytes += size;
    empty = false;
  };
  for (const auto& [handle, end] : ends) add("s", nlohmann::json::array({handle, end_json(end)}));
  for (auto& handle : removed) add("g", std::move(handle));
  outbox_.push_back(part.dump());
  last_queued_ = std::chrono::steady_clock::now();
}

std::string Announcer::snapshot_json() const {
  std::lock_guard lock(mu_);
  nlohmann::json out;
  out["e"] = epoch_;
  out["q"] = seq_;
  out["l"] = std::to_string(last_seen_);
  out["f"] = fallback_;
  auto& shapes = out["s"] = nlohmann::json::object();
  for (const auto& [handle, end] : ends_) shapes[handle] = end_json(end);
  return out.dump();
}

std::uint64_t Announcer::sent() const {
  std::lock_guard lock(mu_);
  return sent_;
}

void Announcer::wake() {
  asio::post(strand_, [self = shared_from_this()] { self->timer_.cancel(); });
}

asio::awaitable<void> Announcer::run() {
  auto self = shared_from_this();  // alive while running
  std::unique_ptr<pg::AsyncConnection> connection;
  bool warned = false;
  while (true) {
    std::optional<std::string> next;
    std::chrono::steady_clock::time_point heartbeat_at;
    {
      std::lock_guard lock(mu_);
      if (stopped_) break;
      if (outbox_.empty() && std::chrono::steady_clock::now() >= last_queued_ + heartbeat_) {
        queue({}, {});
      }
      if (!outbox_.empty()) next = outbox_.front();
      heartbeat_at = last_queued_ + heartbeat_;
    }
    if (!connection) {
      auto connected = co_await pg::AsyncConnection::connect(strand_, conninfo_, 5s);
      if (!connected) {
        if (!std::exchange(warned, true)) {
          spdlog::warn("cluster: cannot announce to followers: {}", connected.error().to_string());
        }
        timer_.expires_after(500ms);
        co_await timer_.async_wait(kNoThrow);
        continue;
      }
      connection = std::move(connected).value();
      warned = false;
    }
    if (!next) {
      timer_.expires_at(heartbeat_at);
      co_await timer_.async_wait(kNoThrow);
      continue;
    }
    asio::steady_timer deadline(strand_, 5s);
    std::vector<std::optional<std::string>> params{channel_, *next};
    auto outcome =
        co_await (connection->query_params("SELECT pg_notify($1, $2)", std::move(params)) ||
                  deadline.async_wait(kNoThrow));
    if (outcome.index() == 1 || !std::get<0>(outcome)) {
      if (outcome.index() == 0) {
        spdlog::warn("cluster: announcing to followers failed: {}",
                     std::get<0>(outcome).error().to_string());
      }
      connection.reset();  // sent again on a new connection
      continue;
    }
    std::lock_guard lock(mu_);
    outbox_.pop_front();
    ++sent_;
  }
}

}  // namespace shapeproxy::cluster
