// A private PostgreSQL 15 cluster owned by this process: initdb into a
// directory, start it with wal_level=logical on a private unix socket and a
// free loopback port, stop it on destruction. Used by `shapeproxy` when no
// DATABASE_URL is given, and by the test harness.
//
// PostgreSQL refuses to run as root; when this process is root the cluster's
// files are owned by, and the server runs as, an unprivileged system user
// ("postgres" if it exists, else "nobody").
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace shapeproxy::embedded {

struct EmbeddedPostgresOptions {
  std::filesystem::path data_dir;           // cluster directory; created if missing
  std::uint16_t port = 0;                   // 0: pick a free loopback port
  std::string superuser = "postgres";       // bootstrap superuser name
  std::filesystem::path bin_dir;            // empty: find initdb/pg_ctl (PG15)
  std::vector<std::string> extra_settings;  // "name = value" lines for postgresql.conf
  bool keep_data_on_stop = true;            // false: remove data_dir on destruction
  std::chrono::seconds start_timeout{60};
  // Non-empty: a new cluster is a streaming hot standby of the server this
  // libpq conninfo names (pg_basebackup -R, as a superuser or a role with
  // REPLICATION) instead of a fresh initdb.
  std::string standby_of;
};

class EmbeddedPostgres {
 public:
  // initdb (when data_dir holds no cluster yet) and start. Idempotent with an
  // existing cluster directory: reuses its data.
  static Result<std::unique_ptr<EmbeddedPostgres>> start(EmbeddedPostgresOptions options);

  ~EmbeddedPostgres();  // stops the server (fast shutdown)
  EmbeddedPostgres(const EmbeddedPostgres&) = delete;
  EmbeddedPostgres& operator=(const EmbeddedPostgres&) = delete;

  // Stops the server; safe to call twice.
  Result<void> stop();
  // Stops then starts again on the same port (for restart tests).
  Result<void> restart();

  // libpq key/value conninfo for `database` as `user` over the unix socket.
  std::string conninfo(const std::string& database = "postgres",
                       const std::string& user = {}) const;
  // postgresql:// URI over TCP loopback, for printing to users.
  std::string uri(const std::string& database = "postgres", const std::string& user = {}) const;

  std::uint16_t port() const { return port_; }
  const std::filesystem::path& socket_dir() const { return socket_dir_; }
  const std::filesystem::path& data_dir() const { return options_.data_dir; }
  const std::string& superuser() const { return options_.superuser; }

  // Runs SQL as the superuser through a short-lived connection.
  Result<void> execute(const std::string& sql, const std::string& database = "postgres") const;

 private:
  explicit EmbeddedPostgres(EmbeddedPostgresOptions options);
  Result<void> init_cluster();
  Result<void> start_server();

  EmbeddedPostgresOptions options_;
  std::filesystem::path socket_dir_;
  std::uint16_t port_ = 0;
  bool running_ = false;
};

}  // namespace shapeproxy::embedded
