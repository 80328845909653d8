// shapeproxy: serves live shapes of a PostgreSQL database over the Electric
// HTTP shape protocol. main() handles the process: flags, logging, the
// embedded cluster when no DATABASE_URL is given, signals, exit codes.
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>

#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "app/demo_data.h"
#include "app/proxy.h"
#include "config/config.h"
#include "embedded/embedded_postgres.h"
#include "logging/log_format.h"
#include "shapeproxy/version.h"

namespace {

namespace asio = boost::asio;
using shapeproxy::Error;
using shapeproxy::Result;

struct Database {
  std::unique_ptr<shapeproxy::embedded::EmbeddedPostgres> cluster;  // null with DATABASE_URL
  std::string conninfo;
  std::vector<shapeproxy::replication::TableName> tables_to_publish;
};

Result<Database> open_database(const shapeproxy::config::Config& config) {
  if (config.database_url) return Database{nullptr, *config.database_url, {}};
  shapeproxy::embedded::EmbeddedPostgresOptions options;
  options.data_dir = std::filesystem::absolute(config.data_dir / "postgres");
  spdlog::info("no DATABASE_URL: starting an embedded PostgreSQL in {}", options.data_dir.string());
  auto cluster = shapeproxy::embedded::EmbeddedPostgres::start(options);
  if (!cluster) return cluster.error();
  if (auto seeded = shapeproxy::app::ensure_demo_data(**cluster, config.publication_name); !seeded)
    return seeded.error();
  // The proxy connects as its own non-superuser role (see demo_data.h); the
  // printed URL is the superuser's, for trying things out.
  std::string conninfo =
      (*cluster)->conninfo(shapeproxy::app::kDemoDatabase, shapeproxy::app::kProxyRole);
  spdlog::info("embedded PostgreSQL ready: psql '{}'",
               (*cluster)->uri(shapeproxy::app::kDemoDatabase));
  return Database{std::move(cluster).value(), conninfo, {{"public", shapeproxy::app::kDemoTable}}};
}

// Every held shape keeps files open and every client a socket: use the
// hard limit on open files, not the (often 1024) soft one, and say so when
// even that cannot hold `max_connections` clients.
void raise_open_files_limit(std::size_t max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
      spdlog::info("open files limit raised from {} to {}", before, limit.rlim_cur);
    } else {
      getrlimit(RLIMIT_NOFILE, &limit);
    }
  }
  // Shapes' files, the database connections and the listener need some too.
  constexpr rlim_t kReserve = 256;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_connections + kReserve) {
    spdlog::warn(
        "open files limit {} is below --max-connections {} + {}: clients beyond it fail to "
        "connect (raise the hard limit, ulimit -Hn)",
        limit.rlim_cur, max_connections, kReserve);
  }
}

int run(const shapeproxy::config::Config& config) {
  raise_open_files_limit(config.max_connections);
  auto database = open_database(config);
  if (!database) {
    spdlog::error("cannot start: {}", database.error().to_string());
    return 1;
  }
  asio::io_context io;
  shapeproxy::app::Proxy proxy(io, config, database->conninfo);
  int exit_code = 0;
  bool stopping = false;
  // Process control (signals, start-up outcome) runs on one strand.
  auto control = asio::make_strand(io);
  asio::signal_set signals(control, SIGINT, SIGTERM);
  auto stop = [&](int code) {
    if (stopping) return;
    stopping = true;
    exit_code = code;
    signals.cancel();
    proxy.shutdown([&io] { io.stop(); });
  };
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
    stop(0);
  });
  asio::co_spawn(
      proxy.executor(), proxy.start(database->tables_to_publish),
      asio::bind_executor(control, [&](std::exception_ptr failure, Result<void> started) {
        if (failure || !started) {
          spdlog::error("cannot start: {}",
                        failure ? "internal error" : started.error().to_string());
          stop(1);
          return;
        }
        if (database->cluster) {
          spdlog::info("try: curl -i 'http://localhost:{}/v1/shape?table={}&offset=-1'",
                       proxy.http_port(), shapeproxy::app::kDemoTable);
        }
      }));
  // Two threads: HTTP sessions run on their own strands, replication and
  // shapes on theirs.
  std::thread second([&io] { io.run(); });
  io.run();
  second.join();
  if (database->cluster) {
    if (auto stopped = database->cluster->stop(); !stopped) {
      spdlog::warn("embedded PostgreSQL did not stop cleanly: {}", stopped.error().to_string());
    } else {
      spdlog::info("embedded PostgreSQL stopped");
    }
  }
  spdlog::info("shapeproxy stopped");
  return exit_code;
}

// glibc's malloc by default raises its mmap threshold to the size of any
// big block freed (up to 32 MiB) and its trim threshold with it, so the 10 MiB
// bodies of snapshot chunks and compactions end up in the heap and stay in
// the RSS once freed (bench/storage A: ~25 MB after 300k updates with
// compactions). Fixed thresholds give them back when freed; the shapes'
// rows are not on the heap (rfc/0002), what is big there is transient.
void bound_malloc_thresholds() {
#ifdef __GLIBC__
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 4 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  bound_malloc_thresholds();
  std::vector<std::string> args(argv + 1, argv + argc);
  auto invocation =
      shapeproxy::config::parse_invocation(args, shapeproxy::config::process_environment());
  if (!invocation) {
    std::cerr << "shapeproxy: " << invocation.error().message << "\n"
              << "(" << invocation.error().hint << ")\n";
    return 2;
  }
  using Action = shapeproxy::config::Invocation::Action;
  if (invocation->action == Action::kHelp) {
    std::cout << shapeproxy::config::usage();
    return 0;
  }
  if (invocation->action == Action::kVersion) {
    std::cout << "shapeproxy " << shapeproxy::kVersion << "\n";
    return 0;
  }
  shapeproxy::logging::install_log_format(invocation->config.log_format == "json"
                                              ? shapeproxy::logging::LogFormat::kJson
                                              : shapeproxy::logging::LogFormat::kText);
  spdlog::set_level(spdlog::level::from_str(invocation->config.log_level));
  return run(invocation->config);
}
