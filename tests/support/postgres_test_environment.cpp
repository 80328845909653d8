// The PostgreSQL test harness: one embedded cluster per test binary in a
// mkdtemp dir, plus a reaper process that stops the cluster and removes the
// dir if this process dies without running TearDown (abort, crash, SIGKILL).
#include "postgres_test_environment.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <thread>

#include "pg/connection.h"

namespace shapeproxy::testing {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<embedded::EmbeddedPostgres> g_cluster;
std::string g_start_error =
    "PostgresTestEnvironment was not set up (link shapeproxy_test_support_main)";
pid_t g_reaper_pid = -1;
int g_reaper_pipe = -1;

// Postmaster pid from <pgdata>/postmaster.pid, or -1.
pid_t read_postmaster_pid(const fs::path& pgdata) {
  std::ifstream in(pgdata / "postmaster.pid");
  long pid = -1;
  if (!(in >> pid) || pid <= 1) return -1;
  return static_cast<pid_t>(pid);
}

// True while `pid` runs (a zombie left to a non-reaping init counts as gone).
bool process_alive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

// Runs in the reaper child: waits until the parent's end of the pipe closes
// (the parent exited, however it died), then kills a still-running server
// (immediate shutdown) and removes the cluster dir.
[[noreturn]] void reap_when_parent_exits(int read_fd, const fs::path& root,
                                         const fs::path& data_dir, const fs::path& socket_dir) {
  setsid();
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  int devnull = open("/dev/null", O_RDWR);
  for (int fd : {0, 1, 2}) dup2(devnull, fd);
  char byte;
  while (read(read_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  pid_t pid = read_postmaster_pid(data_dir / "pgdata");
  if (pid > 0 && kill(pid, SIGQUIT) == 0) {
    for (int i = 0; i < 200 && process_alive(pid); ++i) usleep(50 * 1000);
  }
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::remove_all(socket_dir, ec);
  _exit(0);
}

void start_reaper(const fs::path& root, const fs::path& data_dir, const fs::path& socket_dir) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[1]);
    reap_when_parent_exits(fds[0], root, data_dir, socket_dir);
  }
  close(fds[0]);
  if (pid < 0) {
    close(fds[1]);
    return;
  }
  g_reaper_pid = pid;
  g_reaper_pipe = fds[1];
}

void stop_reaper() {
  if (g_reaper_pipe >= 0) close(g_reaper_pipe);
  g_reaper_pipe = -1;
  if (g_reaper_pid > 0) {
    int status;
    while (waitpid(g_reaper_pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  g_reaper_pid = -1;
}

std::string sanitize(const std::string& prefix) {
  std::string out;
  for (unsigned char c : prefix.substr(0, 32)) {
    char lower = static_cast<char>(std::tolower(c));
    out += (std::isalnum(static_cast<unsigned char>(lower)) && c < 128) ? lower : '_';
  }
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "db_" + out;
  return out;
}

// Runs sql and returns the result, or records a test failure and returns null.
pg::ResultPtr run_sql(const std::string& database, const std::string& sql,
                      const std::string& user) {
  auto conn = pg::Connection::open(conninfo(database, user));
  if (!conn) {
    ADD_FAILURE() << "cannot connect to database '" << database << "' for SQL:\n"
                  << sql << "\nerror: " << conn.error().to_string();
    return nullptr;
  }
  auto result = conn->exec(sql);
  if (!result) {
    ADD_FAILURE() << "SQL failed in database '" << database << "':\n"
                  << sql << "\nerror: " << result.error().to_string();
    return nullptr;
  }
  return std::move(result).value();
}

}  // namespace

void PostgresTestEnvironment::SetUp() {
  std::string tmpl = "/tmp/shapeproxy-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    g_start_error = std::string("mkdtemp failed: ") + std::strerror(errno);
    ADD_FAILURE() << g_start_error;
    return;
  }
  chmod(tmpl.c_str(), 0711);  // as root, the server runs as another user
  embedded::EmbeddedPostgresOptions options;
  options.data_dir = fs::path(tmpl) / "cluster";
  options.keep_data_on_stop = false;
  // A test binary makes a slot per test (a registry test's replication
  // stream) and does not drop them: room for every test of a suite.
  options.extra_settings = {"fsync = off", "synchronous_commit = off", "full_page_writes = off",
                            "max_replication_slots = 64", "max_wal_senders = 64"};
  auto started_at = std::chrono::steady_clock::now();
  auto started = embedded::EmbeddedPostgres::start(std::move(options));
  if (!started) {
    std::error_code ec;
    fs::remove_all(tmpl, ec);
    g_start_error = "could not start the test PostgreSQL cluster: " + started.error().to_string();
    ADD_FAILURE() << g_start_error;
    return;
  }
  g_cluster = std::move(started).value();
  start_reaper(tmpl, g_cluster->data_dir(), g_cluster->socket_dir());
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started_at);
  std::cerr << "[harness] PostgreSQL on port " << g_cluster->port() << " in " << tmpl << " ("
            << elapsed.count() << " ms)" << std::endl;
}

void PostgresTestEnvironment::TearDown() {
  if (g_cluster) {
    fs::path root = g_cluster->data_dir().parent_path();
    g_cluster.reset();  // stops the server and removes its data dir
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  stop_reaper();
}

embedded::EmbeddedPostgres& PostgresTestEnvironment::cluster() {
  if (!g_cluster) {
    // Tests still run after a failed SetUp (a non-fatal failure), so each one
    // that needs the cluster fails here with the reason.
    ADD_FAILURE() << g_start_error;
    throw std::runtime_error("no PostgreSQL test cluster");
  }
  return *g_cluster;
}

std::string create_database(const std::string& prefix, const std::string& owner) {
  static std::atomic<int> counter{0};
  std::string name = sanitize(prefix) + "_" + std::to_string(getpid()) + "_" +
                     std::to_string(counter.fetch_add(1) + 1);
  std::string sql = "CREATE DATABASE " + pg::quote_identifier(name);
  if (!owner.empty()) sql += " OWNER " + pg::quote_identifier(owner);
  auto result = PostgresTestEnvironment::cluster().execute(sql);
  if (!result) ADD_FAILURE() << sql << "\nerror: " << result.error().to_string();
  return name;
}

std::string conninfo(const std::string& database, const std::string& user) {
  return PostgresTestEnvironment::cluster().conninfo(database, user);
}

void execute_sql(const std::string& database, const std::string& sql, const std::string& user) {
  run_sql(database, sql, user);
}

std::string query_value(const std::string& database, const std::string& sql,
                        const std::string& user) {
  auto result = run_sql(database, sql, user);
  if (!result || PQntuples(result.get()) == 0 || PQnfields(result.get()) == 0) return "";
  return pg::get_value(result.get(), 0, 0).value_or("");
}

}  // namespace shapeproxy::testing
