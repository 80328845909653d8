// shapeproxy's configuration: command-line flags, each with an environment
// variable equivalent (the flag wins). Values are validated at start-up and an
// invalid one is refused with a message naming the setting.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace shapeproxy::config {

struct Config {
  // libpq URI or key=value conninfo; unset: start an embedded cluster.
  std::optional<std::string> database_url;
  // Fallback queries go here (e.g. a hot standby) instead of database_url.
  std::optional<std::string> fallback_database_url;
  std::string listen_address = "::";  // IPv6 and IPv4 (see http::ServerOptions)
  std::uint16_t port = 3000;
  std::filesystem::path data_dir = "./shapeproxy-data";
  std::string slot_name = "shapeproxy";
  std::string publication_name = "shapeproxy";
  // Several instances (rfc/0003): this one's name in logs, /v1/status and
  // /metrics (unset: a random one per process), and the URL the others
  // forward requests to while it leads (unset: http://<the address this host
  // reaches PostgreSQL from>:<port>).
  std::optional<std::string> instance_id;
  std::optional<std::string> advertise_url;
  std::string log_level = "info";
  std::string log_format = "text";    // "text" or "json" (one object per line)
  bool access_log = false;            // one entry per answered request
  std::optional<std::string> secret;  // when set, /v1/shape requires ?secret=
  // When set, /metrics requires `Authorization: Bearer <token>` (or ?secret=).
  std::optional<std::string> metrics_token;
  std::chrono::milliseconds replication_status_interval{10'000};
  bool allow_delete = false;  // DELETE /v1/shape
  // Open client connections at once; beyond: 503 + retry-after, then close.
  // Every parked long-poll or SSE stream holds one (and a file descriptor:
  // the proxy raises its soft RLIMIT_NOFILE to the hard limit at start).
  std::size_t max_connections = 10'000;
  std::chrono::milliseconds long_poll_timeout{20'000};
  std::size_t chunk_bytes = 10 * 1024 * 1024;      // largest response body of a shape log
  std::uint64_t compact_bytes = 64 * 1024 * 1024;  // a shape's operations on disk before compaction
  // Block cache of the store of the shapes' rows (rfc/0002-shape-state.md).
  std::size_t state_cache_bytes = 32 * 1024 * 1024;
  std::chrono::seconds shape_idle_timeout{7 * 24 * 3600};  // zero: keep shapes forever
  // Most shapes held at once; past it the least recently read idle shape is
  // evicted, and with none evictable a new shape is refused (503).
  std::size_t max_shapes = 10'000;
  // Degraded mode.
  std::chrono::milliseconds fallback_grace{2'000};  // replication down this long: fallback
  std::chrono::milliseconds fallback_poll_interval{
      1'000};                            // a shape is re-queried at most this often
  std::size_t fallback_max_queries = 4;  // fallback queries in flight; beyond: 503 + retry-after
  int status_max_age_seconds = 5;        // Cache-Control max-age of GET /v1/status
  // Cache-Control of non-live shape responses at offsets other than -1:
  // max-age and stale-while-revalidate (Electric's ELECTRIC_CACHE_*).
  int cache_max_age_seconds = 60;
  int cache_stale_age_seconds = 300;
  // A fallback query running longer is cancelled (statement_timeout); zero: no limit.
  std::chrono::milliseconds fallback_statement_timeout{30'000};
  // A shape's initial query running longer is cancelled; zero: no limit.
  std::chrono::milliseconds snapshot_timeout{120'000};
};

// What the command line asked for.
struct Invocation {
  enum class Action { kRun, kHelp, kVersion };
  Action action = Action::kRun;
  Config config;
};

// Looks up an environment variable; injected so tests need not touch the
// process environment.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
Environment process_environment();

// Parses argv (without argv[0]) and the environment. Errors name the flag
// or variable and say what is expected.
Result<Invocation> parse_invocation(const std::vector<std::string>& args,
                                    const Environment& environment);

// The --help text.
std::string usage();

}  // namespace shapeproxy::config
