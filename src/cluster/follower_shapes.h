// What: FollowerShapes, a follower's own answers to shape reads (rfc/0003,
// "How followers serve"). The shapes the leader holds are opened read-only
// from the shared data directory (ShapeFiles::open_read_only: views) and
// read with the leader's own ShapeReader and LiveParking, so handles,
// offsets, headers and bodies are the leader's. It learns of new data from
// the leader's announcements (Announcer): LISTEN on the cluster's channel,
// and the leader's snapshot of every end when it starts listening; it stats
// the views' meta.json every `meta_poll` to notice compactions.
// Why: with relaying alone every byte is rendered and sent by the leader;
// followers serving the shared files spread that work too.
//
// What it answers itself: reads (offset=-1, an offset, live long-polls,
// SSE) of a shape it holds a view of, spelled as that shape was made,
// while it is in step with the leader (synced with its snapshot, no
// message missed, one heard within `silence`, the leader not in fallback
// mode). Everything else is Unavailable{elsewhere}, relayed to the leader,
// including every must-refetch, 400 or error its reader would give: the
// leader decides those, so a follower never gives a must-refetch the
// leader would not.
// Invariants:
//  - a view serves through an end the leader announced durable, never
//    past it nor past what its files held when opened (LogDiskRead stops at
//    the log's end); its files are one consistent set, held open, so a
//    compaction never makes it serve a mixture (a stale view is an older,
//    still valid log of the same handle);
//  - an answer reaching a view's end (up-to-date, or parking a live read)
//    is given only while the view holds the end last announced for its
//    shape; the up-to-date's global_last_seen_lsn is the one announced with
//    that end or after it, and every operation at or below it lies at or
//    before the ends announced.
// Threading: read() from any thread; the state lives on its strand
// (asserted); views are opened on a thread of its own; `done` callbacks run
// on the strand.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "shapes/live_parking.h"
#include "shapes/shape.h"
#include "shapes/shape_reader.h"
#include "shapes/shape_service.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::cluster {

struct FollowerShapesOptions {
  std::filesystem::path shapes_dir;  // <data-dir>/shapes
  std::size_t chunk_bytes = 0;       // the leader's (the same config)
  std::chrono::milliseconds live_timeout{20'000};
  std::string conninfo;
  std::string channel;  // Announcer::channel_for(slot)
  // No message from the leader for this long: stop serving (relay).
  std::chrono::milliseconds silence{3'000};
  std::chrono::milliseconds meta_poll{2'000};
};

class FollowerShapes : public shapes::ShapeService,
                       public std::enable_shared_from_this<FollowerShapes> {
 public:
  // GETs the leader's snapshot of ends (Announcer::snapshot_json()); `done`
  // gets the body or an error, on any thread.
  using FetchEnds = std::function<void(std::function<void(Result<std::string>)>)>;

  FollowerShapes(boost::asio::io_context& io, FollowerShapesOptions options, FetchEnds fetch_ends);
  ~FollowerShapes() override;

  void start();
  // Answers parked reads (up-to-date), stops listening, joins its threads.
  // From any thread but its own; `done` runs once everything stopped.
  void stop(std::function<void()> done = {});

  std::function<void()> read(shapes::ShapeDefinitionRequest definition, shapes::ReadRequest request,
                             std::function<void(shapes::ReadOutcome)> done) override;
  // Deletes go to the leader (never called on a follower's routes).
  void remove(shapes::ShapeDefinitionRequest definition, std::optional<std::string> handle,
              std::function<void(Result<shapes::DeleteOutcome>)> done) override;

  // From any thread: whether it answers reads itself now, and how many it
  // answered (tests, /metrics).
  bool serving() const { return serving_.load(std::memory_order_relaxed); }
  std::uint64_t served() const { return served_.load(std::memory_order_relaxed); }
  std::uint64_t parked() const { return parking_.parked_reads(); }

 private:
  struct MetaStamp {
    std::uint64_t inode = 0;
    std::int64_t mtime_ns = 0;
    std::uint64_t size = 0;
    friend bool operator==(const MetaStamp&, const MetaStamp&) = default;
  };
  struct View {
    std::shared_ptr<shapes::Shape> shape;
    std::optional<shapes::LogOffset> through;  // what it serves through
    bool behind = false;                       // its files held less than announced
    MetaStamp stamp;
    std::string request_key;
  };
  struct Opened {
    std::string handle;
    std::shared_ptr<shapes::Shape> shape;  // null: could not open (error)
    std::optional<shapes::LogOffset> through;
    bool behind = false;
    MetaStamp stamp;
    std::string error;
    bool gone = false;  // no meta.json: the shape was removed
  };

  static Opened open_view(const std::filesystem::path& dir, std::string handle,
                          std::optional<shapes::LogOffset> announced, std::size_t chunk_bytes);
  static std::optional<MetaStamp> stamp_of(const std::filesystem::path& dir);
  static std::string request_key(const shapes::ShapeDefinitionRequest& request);

  void serve(const shapes::ShapeDefinitionRequest& definition, const shapes::ReadRequest& request,
             const std::shared_ptr<shapes::ReadTicket>& ticket);
  std::shared_ptr<shapes::Shape> view_for(const shapes::ShapeDefinitionRequest& definition,
                                          const shapes::ReadRequest& request) const;
  bool confirmed(const std::string& handle) const;
  bool confirmed_end(const shapes::ReadResult& result) const;
  void open_soon(const std::string& handle);
  void open_queued();
  void adopt(Opened opened);
  void drop_view(const std::string& handle);
  void on_message(const std::string& payload);
  void apply_message(const nlohmann::json& message);
  void on_snapshot(Result<std::string> body);
  void request_snapshot();
  void lose_step(const char* why);
  void update_serving();
  void tick();
  void poll_meta();
  boost::asio::awaitable<void> listen();
  shapes::Lifetime lifetime();

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  FollowerShapesOptions options_;
  FetchEnds fetch_ends_;
  shapes::ShapeReader reader_;
  shapes::LiveParking parking_;
  boost::asio::thread_pool files_{1};  // opens views, stats meta.json
  boost::asio::steady_timer ticker_;

  // On the strand.
  std::map<std::string, View> views_;
  std::map<std::string, std::set<std::string>> by_request_;       // request key -> handles
  std::map<std::string, std::optional<shapes::LogOffset>> ends_;  // announced
  std::set<std::string> to_open_;
  bool opening_ = false;
  bool listening_ = false;
  bool synced_ = false;  // the snapshot applied, no message missed since
  bool fetching_ = false;
  std::string epoch_;
  std::uint64_t next_seq_ = 0;
  std::deque<nlohmann::json> pending_;  // messages heard before the snapshot
  std::uint64_t last_seen_ = 0;
  bool fallback_ = false;
  std::chrono::steady_clock::time_point last_heard_{};
  std::chrono::steady_clock::time_point next_meta_poll_{};
  bool stopped_ = false;
  pg::AsyncConnection* connection_ = nullptr;  // the listener's, while it runs

  std::atomic<bool> serving_{false};
  std::atomic<std::uint64_t> served_{0};
};

}  // namespace shapeproxy::cluster
