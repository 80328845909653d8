// shapeproxy_test_cluster: a throwaway PostgreSQL 15 cluster for test
// drivers written in other languages (the Node e2e suite spawns it).
//
// Starts a private cluster (wal_level=logical, free loopback port, fsync off)
// in a fresh temp dir, prints ONE JSON line to stdout:
//   {"conninfo": "...", "uri": "postgresql://...", "port": N, "socket_dir": "..."}
// then waits until stdin closes (the parent exited, however it died) or
// SIGTERM/SIGINT/SIGHUP arrives, then stops the cluster and removes the dir.
//
// With `--standby-of CONNINFO` the cluster is instead a streaming hot standby
// of the server CONNINFO names (pg_basebackup -R as that conninfo's user,
// e.g. the superuser of another shapeproxy_test_cluster); it prints the same
// JSON line once it accepts read-only connections.
//
// Control channel (for tests that take the database away): each line read on
// stdin is a command, answered by one line on stdout:
//   stop   -> stops the server (fast shutdown), keeps its files   -> "ok"
//   start  -> starts it again on the same port and socket         -> "ok"
//   status -> "ok running" or "ok stopped"
// A failure is answered "error <message>"; unknown lines "error unknown command".
// Diagnostics go to stderr; the exit code is 0 after a clean stop, 1 when the
// cluster could not start.
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "embedded/embedded_postgres.h"

namespace {

namespace fs = std::filesystem;
using shapeproxy::embedded::EmbeddedPostgres;
using shapeproxy::embedded::EmbeddedPostgresOptions;

// Written by the signal handler; the main loop polls it.
volatile sig_atomic_t g_stop_signal = 0;

void on_signal(int signal) { g_stop_signal = signal; }

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR so we notice
  for (int signal : {SIGTERM, SIGINT, SIGHUP}) sigaction(signal, &action, nullptr);
  // A parent that closed our stdout must not kill us before we clean up.
  ::signal(SIGPIPE, SIG_IGN);
}

std::string json_string(const std::string& text) { return nlohmann::json(text).dump(); }

// Runs one control command; returns the answer line.
std::string run_command(const std::string& command, EmbeddedPostgres& cluster, bool& running) {
  if (command == "stop") {
    auto stopped = cluster.stop();
    if (!stopped) return "error " + stopped.error().to_string();
    running = false;
    std::cerr << "shapeproxy_test_cluster: stopped PostgreSQL (control channel)\n";
    return "ok";
  }
  if (command == "start") {
    // restart() is stop() (a no-op once stopped) then a start on the same
    // port, socket dir and data dir.
    auto started = cluster.restart();
    if (!started) return "error " + started.error().to_string();
    running = true;
    std::cerr << "shapeproxy_test_cluster: started PostgreSQL on port " << cluster.port()
              << " (control channel)\n";
    return "ok";
  }
  if (command == "status") return running ? "ok running" : "ok stopped";
  return "error unknown command";
}

// Serves control commands until stdin reaches EOF (or errors) or a stop
// signal arrives.
void serve_until_stop(EmbeddedPostgres& cluster) {
  char buffer[256];
  std::string pending;
  bool running = true;
  while (!g_stop_signal) {
    pollfd fd{STDIN_FILENO, POLLIN, 0};
    int ready = poll(&fd, 1, 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (ready == 0) continue;
    // EOF or an error (POLLHUP/POLLERR) ends the wait.
    ssize_t n = read(STDIN_FILENO, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    pending.append(buffer, static_cast<std::size_t>(n));
    for (auto newline = pending.find('\n'); newline != std::string::npos;
         newline = pending.find('\n')) {
      std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty()) continue;
      std::cout << run_command(line, cluster, running) << std::endl;
    }
    if (pending.size() > 4096) pending.clear();  // not a command stream
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::cout << "usage: shapeproxy_test_cluster [--standby-of CONNINFO]\n"
                 "Starts a throwaway PostgreSQL 15 cluster (or a streaming standby of\n"
                 "CONNINFO), prints one JSON line with\n"
                 "conninfo, uri, port and socket_dir, and stops it (removing its files)\n"
                 "when stdin closes or on SIGTERM/SIGINT. Lines on stdin are commands:\n"
                 "stop, start, status (answered \"ok ...\" or \"error ...\" on stdout).\n";
    return 0;
  }
  std::string standby_of;
  if (argc == 3 && std::strcmp(argv[1], "--standby-of") == 0) {
    standby_of = argv[2];
  } else if (argc > 1) {
    std::cerr << "shapeproxy_test_cluster: unexpected arguments (see --help)\n";
    return 2;
  }
  install_signal_handlers();
  // stdout carries only the JSON line: library logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("test_cluster"));

  std::string root = "/tmp/shapeproxy-e2e-XXXXXX";
  if (mkdtemp(root.data()) == nullptr) {
    std::cerr << "shapeproxy_test_cluster: mkdtemp failed: " << std::strerror(errno) << "\n";
    return 1;
  }
  // As root, the server runs as an unprivileged user that must reach the
  // cluster dir inside this one.
  chmod(root.c_str(), 0711);

  EmbeddedPostgresOptions options;
  options.data_dir = fs::path(root) / "cluster";
  options.keep_data_on_stop = false;
  // Speed over durability: the cluster lives for one test run.
  options.extra_settings = {
      "fsync = off",           "synchronous_commit = off",   "full_page_writes = off",
      "max_connections = 200", "max_replication_slots = 40", "max_wal_senders = 40"};
  options.standby_of = standby_of;

  auto started_at = std::chrono::steady_clock::now();
  auto started = EmbeddedPostgres::start(std::move(options));
  if (!started) {
    std::error_code ec;
    fs::remove_all(root, ec);
    std::cerr << "shapeproxy_test_cluster: could not start PostgreSQL: "
              << started.error().to_string() << "\n";
    return 1;
  }
  auto cluster = std::move(started).value();
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started_at);
  std::cerr << "shapeproxy_test_cluster: PostgreSQL on port " << cluster->port() << " in " << root
            << " (" << elapsed.count() << " ms)\n";

  std::cout << "{\"conninfo\": " << json_string(cluster->conninfo())
            << ", \"uri\": " << json_string(cluster->uri()) << ", \"port\": " << cluster->port()
            << ", \"socket_dir\": " << json_string(cluster->socket_dir().string()) << "}"
            << std::endl;

  if (!g_stop_signal) serve_until_stop(*cluster);

  if (auto stopped = cluster->stop(); !stopped) {
    std::cerr << "shapeproxy_test_cluster: stop failed: " << stopped.error().to_string() << "\n";
  }
  cluster.reset();  // removes the data dir and the socket dir
  std::error_code ec;
  fs::remove_all(root, ec);
  std::cerr << "shapeproxy_test_cluster: stopped and removed " << root << "\n";
  return 0;
}
