// What: Announcer, the leader's half of how followers learn of new data
// (rfc/0003, "How followers serve"). After each durable group commit of
// shape logs it sends a PostgreSQL NOTIFY on the cluster's channel: which
// shapes grew to which end, the global_last_seen_lsn sealed with that batch,
// and whether the leader serves in fallback mode. It also keeps every
// shape's durable end, which a follower fetches whole (snapshot_json(),
// served as GET /v1/cluster/ends) when it starts listening.
// Why: a follower serves shape logs from the shared files, but only up to
// an end the leader made durable and announced; the files alone cannot say
// what is durable, nor which global_last_seen_lsn goes with an end.
//
// A message (JSON, at most kMaxPayload bytes, NOTIFY's limit is 8000):
//   {"e": epoch, "q": seq, "l": "<lsn>", "f": fallback,
//    "s": [[handle, "<tx>_<op>" | null], ...], "g": [removed handle, ...]}
// Invariants: seq counts messages of one epoch (this process) from 1, one
// by one, and they are sent in seq order, so a follower detects any it
// missed (then it fetches the snapshot again). A batch too big for one
// message is split; only its last part carries the batch's lsn (earlier
// parts carry the previous one), so a follower never holds an lsn whose
// ends it has not all seen. With nothing to say, a heartbeat goes every
// `heartbeat` (a follower that hears nothing for a few of them stops
// serving by itself). The snapshot includes exactly the messages up to its
// "q".
// Threading: every public method from any thread (state under a mutex);
// the sending runs on a strand of the io_context it was given.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shapes/log_offset.h"

namespace shapeproxy::cluster {

// Handles and their log ends (unset: no operations yet).
using ShapeEnds = std::vector<std::pair<std::string, std::optional<shapes::LogOffset>>>;

class Announcer : public std::enable_shared_from_this<Announcer> {
 public:
  static constexpr std::size_t kMaxPayload = 7000;

  Announcer(boost::asio::io_context& io, std::string conninfo, std::string channel,
            std::string epoch, std::chrono::milliseconds heartbeat = std::chrono::seconds(1));

  // The NOTIFY channel of the instances on this slot (an identifier).
  static std::string channel_for(std::string_view slot);

  // Connects (again, after errors) and sends until stop().
  void start();
  void stop();

  // The shapes loaded at start-up, before any batch (replaces what is held).
  void seed(std::uint64_t last_seen, ShapeEnds ends);
  // A batch of shape logs is durable.
  void durable(std::uint64_t last_seen, ShapeEnds ends);
  void removed(std::string handle);
  // The leader's serving mode; announced when it changes.
  void set_fallback(bool fallback);

  // {"e", "q", "l", "f", "s": {handle: end | null}}: every shape's durable
  // end after the messages up to "q".
  std::string snapshot_json() const;
  // Tests and /metrics: messages sent so far.
  std::uint64_t sent() const;

 private:
  // Under mu_: queues the messages saying `ends` and `removed` (none: a
  // heartbeat, or the serving mode changed).
  void queue(const ShapeEnds& ends, std::vector<std::string> removed);
  void wake();
  boost::asio::awaitable<void> run();

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::string conninfo_;
  std::string channel_;
  std::string epoch_;
  std::chrono::milliseconds heartbeat_;
  boost::asio::steady_timer timer_;  // strand: the heartbeat, or woken by a message

  mutable std::mutex mu_;
  std::uint64_t seq_ = 0;        // of the last message queued
  std::uint64_t last_seen_ = 0;  // announced with the last message
  bool fallback_ = false;
  std::map<std::string, std::optional<shapes::LogOffset>> ends_;
  std::deque<std::string> outbox_;  // payloads not yet sent, in seq order
  std::uint64_t sent_ = 0;
  bool stopped_ = false;
  std::chrono::steady_clock::time_point last_queued_{};
};

}  // namespace shapeproxy::cluster
