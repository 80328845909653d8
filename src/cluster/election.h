// What: Election, the leadership of the instances sharing one data directory
// and one replication slot (rfc/0003-several-instances.md). Each instance
// runs one; at most one leads at a time:
//  - the leader holds the PostgreSQL session-level advisory lock
//    lock_key(slot) on a dedicated connection, AND the data directory's lock
//    (DataDirLock); it writes leader.json (LeaderRecord) naming itself and the
//    backend pid of that session;
//  - a follower polls pg_try_advisory_lock every poll_interval; when it gets
//    the lock it waits for the data directory's lock (the previous leader
//    releases it when it exits), then leads;
//  - a follower learns the leader from leader.json, trusted only when its
//    backend pid is the lock holder's in pg_locks (a stale record is ignored);
//  - with PostgreSQL unreachable, an instance that gets the data directory's
//    lock leads provisionally (serves its shapes from disk, as a lone proxy
//    started with the database down does) but must not stream until it holds
//    the advisory lock; a follower then trusts leader.json as it is, since
//    its writer holds the data directory's lock;
//  - a leader whose session is lost keeps leading (the data directory's lock
//    still fences the others) and retries the advisory lock; if another
//    instance holds it, this one is deposed and must stop at once;
//  - the election session carries idle_session_timeout (session_idle_limit),
//    so the lock of a leader cut off by a partition that drops packets is
//    released by the server; that leader reads the others' claim every
//    round, and the next leader ends the walsender it left on the slot
//    before streaming.
// Invariants: `promoted` fires at most once, before `lock_taken`; `deposed`
// fires at most once, only after `promoted`; nothing fires after stop().
// Threading: round()/start()/stop() on the executor (a strand); view() from
// any thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/data_dir_lock.h"
#include "cluster/leader_record.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::cluster {

enum class Role { kFollower, kLeader };
const char* to_string(Role role);  // "follower", "leader"

// What /v1/status and /metrics publish and what the forwarder follows.
struct ClusterView {
  Role role = Role::kFollower;
  std::string instance_id;
  // The leader when known (this instance's own record when it leads).
  std::optional<LeaderRecord> leader;
  // This instance holds the advisory lock (a leader may stream).
  bool lock_held = false;
};

struct ElectionOptions {
  std::string conninfo;
  // The advisory lock's name: the slot, so proxies of different slots in
  // one database do not elect among each other.
  std::string lock_name = "shapeproxy";
  std::filesystem::path data_dir;
  std::string instance_id;
  // Where the others reach this instance; unset: http://<the address the
  // database sees this host at, 127.0.0.1 over a Unix socket>:<port()>.
  std::optional<std::string> advertise_url;
  std::function<std::uint16_t()> port;
  std::chrono::milliseconds poll_interval{500};
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds query_timeout{2'000};
};

struct ElectionEvents {
  std::function<void()> promoted;    // this instance leads now: open the store, serve
  std::function<void()> lock_taken;  // the advisory lock is held: replication may stream
  std::function<void(const std::string& why)> deposed;  // another leads: stop at once
};

class Election : public std::enable_shared_from_this<Election> {
 public:
  Election(boost::asio::any_io_executor executor, ElectionOptions options, ElectionEvents events);
  ~Election();

  // One round (connect if needed, try or keep the lock, learn the leader).
  boost::asio::awaitable<void> round();
  // Runs rounds every poll_interval until stop().
  void start();
  void stop();
  // While leading: writes the leader record again (e.g. once the HTTP port
  // is bound, which own_url() names).
  void republish();
  const boost::asio::any_io_executor& executor() const { return executor_; }

  ClusterView view() const;

  // The advisory lock's key for `name`: FNV-1a 64 of "shapeproxy:" + name.
  static std::int64_t lock_key(std::string_view name);

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<bool> connect();
  // Runs a query with the query timeout; the first row's values, or nullopt
  // (the connection is then dropped: the session, and any lock, are gone).
  boost::asio::awaitable<std::optional<std::vector<std::optional<std::string>>>> query_row(
      std::string sql, std::vector<std::optional<std::string>> params);
  boost::asio::awaitable<void> round_connected();
  void round_unreachable();
  // Takes the data directory's lock and leads; true when this session holds
  // the advisory lock too (take_slot() must follow).
  bool try_promote();
  // Ends a walsender left on the slot by a previous leader (before this
  // instance's first stream only), then fires lock_taken.
  boost::asio::awaitable<void> take_slot();
  // While leading: deposes this instance if another one has claimed the
  // data directory since (claim.json); true then.
  bool claimed_by_another();
  // The election session's idle_session_timeout.
  std::chrono::milliseconds session_idle_limit() const;
  void learn_leader(std::optional<std::int64_t> holder_pid);
  std::string own_url() const;
  LeaderRecord own_record() const;
  void depose(const std::string& why);

  boost::asio::any_io_executor executor_;
  const ElectionOptions options_;
  ElectionEvents events_;
  boost::asio::steady_timer timer_;
  std::unique_ptr<pg::AsyncConnection> connection_;
  std::unique_ptr<DataDirLock> data_dir_lock_;
  bool stopped_ = false;
  bool promoted_ = false;
  bool deposed_ = false;
  bool waiting_logged_ = false;
  bool streamed_ = false;  // lock_taken has fired: the slot's walsender may be ours
  std::optional<std::int64_t> backend_pid_;  // of the session holding the lock
  std::string client_address_;               // as the database sees this host
  std::int64_t since_ms_ = 0;

  mutable std::mutex mutex_;
  ClusterView view_;  // guarded by mutex_
};

}  // namespace shapeproxy::cluster
