// bench_ingest: how fast the replication ingest (ReplicationStream: libpq
// COPY_BOTH + pgoutput decoder + transaction assembler) turns a write load
// into decoded changes, measured against pg_recvlogical draining the same
// load through the same pgoutput plugin to /dev/null, in the same run.
//
// Procedure (see /work/shared/reference/benchmarking.md and bench/README.md):
//  1. Start a private PostgreSQL 15 cluster in a temp dir; create bench_rows
//     and a publication for it; create 1 + 2*pairs logical slots BEFORE the
//     load, so every slot sees exactly the same WAL.
//  2. Load `rows` rows in `transactions` INSERT transactions.
//  3. Warm-up (unmeasured): the candidate drains slot 0; it also finds the
//     exact end LSN of the last load transaction (the commit message's LSN),
//     which both sides then use as their end point.
//  4. Alternate reference (pg_recvlogical -E <end>) and candidate for each
//     pair on fresh slots; per-pair ratio = candidate rate / reference rate.
//  5. Print per-pair lines, peak RSS, and the closing line
//     `ratio X (median of N; min A, max B) candidate C changes/s, pg_recvlogical R changes/s`.
//
// Pinning: the consumer (pg_recvlogical, or the candidate's io_context
// thread) runs on the first allowed CPU; the whole PostgreSQL process tree
// (postmaster, and so every walsender it forks) on the second. The walsender
// decodes WAL for both sides identically; pinning it away from the consumer
// makes both sides a two-stage pipeline on two cores, the same for both.
// --no-pin leaves everything to the scheduler.
//
// The candidate must decode exactly `rows` insert changes in `transactions`
// transactions; anything else is a correctness failure (exit 1). Slowness
// never fails: the ratio is reported, not asserted.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "embedded/embedded_postgres.h"
#include "pg/connection.h"
#include "pg/lsn.h"
#include "replication/replication_stream.h"
#include "shape_apply.h"

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace shapeproxy;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using pg::Lsn;

constexpr const char* kDatabase = "postgres";
constexpr const char* kPublication = "bench_pub";
constexpr const char* kDefaultBinDir = "/usr/lib/postgresql/15/bin";

struct Options {
  long rows = 1'000'000;
  long transactions = 100;
  int pairs = 5;
  bool pin = true;
  bool verbose = false;
  std::string pg_recvlogical;  // empty: $SHAPEPROXY_PG_BINDIR or the Debian PG15 bindir
  std::chrono::seconds run_timeout{600};
  // --shapes N: the candidate also applies every transaction to N shapes.
  int shapes = 0;
  bench::ShapeWhere where = bench::ShapeWhere::kEquality;
  bool use_index = true;
  // Where the shapes keep their rows: a StateStore per candidate run under
  // it, on disk as in the proxy (set by main to the benchmark's temp dir).
  std::string state_root;
};

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--rows N] [--transactions N] [--pairs N] [--no-pin]\n"
               "          [--pg-recvlogical PATH] [--timeout SECONDS] [--verbose]\n"
               "          [--shapes N [--where eq|mod] [--no-index]]\n"
               "Decoded changes/s of the replication ingest vs pg_recvlogical (pgoutput,\n"
               "to /dev/null) on the same load; prints the median per-pair ratio.\n"
               "--shapes N: the candidate also applies each transaction to N shapes (no log\n"
               "files; rows in an on-disk state store) on the table, `id = $1` (eq,\n"
               "indexable) or `id %% N = k` (mod);\n"
               "--no-index evaluates every shape on every change (the old path).\n",
               argv0);
}

std::optional<Options> parse_args(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    auto number = [&](long min) -> std::optional<long> {
      auto text = next();
      if (!text) return std::nullopt;
      char* end = nullptr;
      long value = std::strtol(text->c_str(), &end, 10);
      if (end == text->c_str() || *end != '\0' || value < min) return std::nullopt;
      return value;
    };
    if (arg == "--rows") {
      auto v = number(1);
      if (!v) return std::nullopt;
      options.rows = *v;
    } else if (arg == "--transactions") {
      auto v = number(1);
      if (!v) return std::nullopt;
      options.transactions = *v;
    } else if (arg == "--pairs") {
      auto v = number(1);
      if (!v || *v > 14) return std::nullopt;  // 1 + 2*14 slots fit max_replication_slots=30
      options.pairs = static_cast<int>(*v);
    } else if (arg == "--timeout") {
      auto v = number(1);
      if (!v) return std::nullopt;
      options.run_timeout = std::chrono::seconds(*v);
    } else if (arg == "--pg-recvlogical") {
      auto v = next();
      if (!v) return std::nullopt;
      options.pg_recvlogical = *v;
    } else if (arg == "--shapes") {
      auto v = number(1);
      if (!v) return std::nullopt;
      options.shapes = static_cast<int>(*v);
    } else if (arg == "--where") {
      auto v = next();
      if (!v || (*v != "eq" && *v != "mod")) return std::nullopt;
      options.where = *v == "eq" ? bench::ShapeWhere::kEquality : bench::ShapeWhere::kModulo;
    } else if (arg == "--no-index") {
      options.use_index = false;
    } else if (arg == "--no-pin") {
      options.pin = false;
    } else if (arg == "--verbose") {
      options.verbose = true;
    } else {
      return std::nullopt;
    }
  }
  if (options.transactions > options.rows) return std::nullopt;  // no empty transactions
  return options;
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// ---------------------------------------------------------------------------
// CPUs and pinning

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

bool pin_pid(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(pid, sizeof set, &set) == 0;
}

bool pin_this_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

pid_t read_postmaster_pid(const fs::path& pgdata) {
  std::ifstream in(pgdata / "postmaster.pid");
  long pid = -1;
  if (!(in >> pid) || pid <= 1) return -1;
  return static_cast<pid_t>(pid);
}

// Parent pid from /proc/<pid>/stat ("pid (comm) state ppid ..."), or -1.
pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  if (paren == std::string::npos || paren + 4 >= line.size()) return -1;
  return static_cast<pid_t>(std::atol(line.c_str() + paren + 4));
}

// Pins the postmaster and the children it forked so far (checkpointer,
// walwriter, ...) to `cpu`. Backends and walsenders forked later inherit the
// postmaster's mask. Returns how many processes were pinned.
int pin_postgres_tree(pid_t postmaster, int cpu) {
  if (!pin_pid(postmaster, cpu)) return 0;
  int pinned = 1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
    if (parent_of(pid) == postmaster && pin_pid(pid, cpu)) ++pinned;
  }
  return pinned;
}

// ---------------------------------------------------------------------------
// Reaper: if this process dies without cleaning up (Ctrl-C, crash, kill), a
// child notices the closed pipe, stops the cluster and removes the temp dir.

struct Reaper {
  pid_t pid = -1;
  int pipe_fd = -1;
};

bool process_alive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

Reaper start_reaper(const fs::path& root, const fs::path& pgdata, const fs::path& socket_dir) {
  Reaper reaper;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return reaper;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[1]);
    setsid();
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    int devnull = open("/dev/null", O_RDWR);
    for (int fd : {0, 1, 2}) dup2(devnull, fd);
    char byte;
    while (read(fds[0], &byte, 1) < 0 && errno == EINTR) {
    }
    pid_t postmaster = read_postmaster_pid(pgdata);
    if (postmaster > 0 && kill(postmaster, SIGQUIT) == 0) {
      for (int i = 0; i < 200 && process_alive(postmaster); ++i) usleep(50 * 1000);
    }
    std::error_code ec;
    fs::remove_all(root, ec);
    fs::remove_all(socket_dir, ec);
    _exit(0);
  }
  close(fds[0]);
  if (pid < 0) {
    close(fds[1]);
    return reaper;
  }
  reaper.pid = pid;
  reaper.pipe_fd = fds[1];
  return reaper;
}

void stop_reaper(Reaper& reaper) {
  if (reaper.pipe_fd >= 0) close(reaper.pipe_fd);
  reaper.pipe_fd = -1;
  if (reaper.pid > 0) {
    int status;
    while (waitpid(reaper.pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  reaper.pid = -1;
}

// ---------------------------------------------------------------------------
// SQL helpers (blocking; the benchmark's own setup, never on an event loop)

Result<pg::ResultPtr> run_sql(pg::Connection& conn, const std::string& sql) {
  auto result = conn.exec(sql);
  if (!result) return Error{result.error().code, sql + ": " + result.error().message, ""};
  return result;
}

std::string slot_name(int index) { return "bench_slot_" + std::to_string(index); }

// ---------------------------------------------------------------------------
// One measured drain of one slot.

struct RunResult {
  bool ok = false;
  std::string error;
  double seconds = 0;      // wall clock, start of the consumer to its last transaction
  double cpu_seconds = 0;  // consumer CPU (candidate: its io thread; reference: the process)
  std::uint64_t changes = 0;
  std::uint64_t inserts = 0;
  std::uint64_t transactions = 0;
  Lsn last_end_lsn = 0;
  std::uint64_t shape_rows = 0;           // --shapes: rows held by the shapes at the end
  std::uint64_t shape_rows_expected = 0;  // and what they should hold
};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Counts what the stream delivers and acknowledges every transaction, as a
// consumer that handled it would. Touches nothing else: the benchmark
// measures the ingest up to the listener, not downstream work.
class CountingListener : public replication::ReplicationListener {
 public:
  CountingListener(std::uint64_t expected_transactions, Lsn target, bench::ShapeApply* shapes)
      : expected_transactions_(expected_transactions), target_(target), shapes_(shapes) {}

  void set_stream(std::shared_ptr<replication::ReplicationStream> stream) {
    stream_ = std::move(stream);
  }

  // On the stream's io thread.
  void on_transaction(replication::Transaction transaction) override {
    for (const auto& change : transaction.changes) {
      if (change.kind == replication::Change::Kind::kInsert) ++inserts_;
    }
    changes_ += transaction.changes.size();
    ++transactions_;
    if (shapes_ != nullptr) shapes_->apply(transaction);
    last_end_lsn_ = transaction.end_lsn;
    stream_->acknowledge(transaction.end_lsn);
    if (transactions_ >= expected_transactions_ || transaction.end_lsn >= target_) {
      auto now = Clock::now();
      double cpu = thread_cpu_seconds();
      std::lock_guard lock(mutex_);
      if (!done_) {
        done_ = true;
        finished_at_ = now;
        cpu_at_finish_ = cpu;
      }
      changed_.notify_all();
    }
  }

  void on_state(replication::StreamState state, const Error* cause) override {
    std::lock_guard lock(mutex_);
    if (state == replication::StreamState::kStopped) stopped_ = true;
    // A reconnect mid-run would make the timing meaningless; the run fails.
    if (cause && error_.empty()) error_ = cause->to_string();
    changed_.notify_all();
  }

  // Waits until the end was reached or the stream failed; false on timeout.
  bool wait_done(std::chrono::seconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return done_ || !error_.empty(); });
  }
  bool wait_stopped(std::chrono::seconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return stopped_; });
  }

  // Read after the io thread was joined.
  std::uint64_t changes() const { return changes_; }
  std::uint64_t inserts() const { return inserts_; }
  std::uint64_t transactions() const { return transactions_; }
  Lsn last_end_lsn() const { return last_end_lsn_; }
  bool done() const { return done_; }
  Clock::time_point finished_at() const { return finished_at_; }
  double cpu_at_finish() const { return cpu_at_finish_; }
  const std::string& error() const { return error_; }

 private:
  const std::uint64_t expected_transactions_;
  const Lsn target_;
  bench::ShapeApply* shapes_;
  std::shared_ptr<replication::ReplicationStream> stream_;
  std::uint64_t changes_ = 0;
  std::uint64_t inserts_ = 0;
  std::uint64_t transactions_ = 0;
  Lsn last_end_lsn_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  bool done_ = false;
  bool stopped_ = false;
  Clock::time_point finished_at_;
  double cpu_at_finish_ = 0;
  std::string error_;
};

// The candidate: a ReplicationStream on its own io_context thread (pinned to
// `cpu` when >= 0) drains `slot` until the transaction ending at `target`
// (or the expected number of transactions) arrived.
RunResult run_candidate(const std::string& conninfo, const std::string& slot,
                        std::uint64_t expected_transactions, Lsn target, int cpu,
                        std::chrono::seconds timeout, const Options& bench_options) {
  RunResult result;
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  std::unique_ptr<bench::ShapeApply> shapes;
  if (bench_options.shapes > 0) {
    auto store = shapeproxy::shapes::StateStore::open(fs::path(bench_options.state_root) / slot,
                                                      shapeproxy::shapes::StateStoreOptions{});
    if (!store) {
      result.error = "state store: " + store.error().to_string();
      return result;
    }
    shapes = std::make_unique<bench::ShapeApply>(bench_options.shapes, bench_options.where,
                                                 bench_options.use_index, bench_options.rows,
                                                 std::move(store).value());
  }
  CountingListener listener(expected_transactions, target, shapes.get());
  replication::ReplicationStreamOptions options;
  options.conninfo = conninfo;
  options.slot_name = slot;
  options.publication_name = kPublication;
  options.status_interval = 1s;
  options.max_backoff = 1s;
  auto stream =
      std::make_shared<replication::ReplicationStream>(io.get_executor(), options, listener);
  listener.set_stream(stream);

  std::thread thread([&] {
    if (cpu >= 0) pin_this_thread(cpu);
    io.run();
  });
  auto started_at = Clock::now();
  stream->start();
  bool finished = listener.wait_done(timeout);
  stream->stop();
  listener.wait_stopped(10s);
  work.reset();
  io.stop();
  thread.join();

  result.changes = listener.changes();
  result.inserts = listener.inserts();
  result.transactions = listener.transactions();
  result.last_end_lsn = listener.last_end_lsn();
  if (shapes) {
    result.shape_rows = shapes->rows_held();
    result.shape_rows_expected = shapes->rows_expected();
  }
  if (!listener.error().empty()) {
    result.error = "replication stream failed: " + listener.error();
  } else if (!finished || !listener.done()) {
    result.error = "timed out after " + std::to_string(timeout.count()) + " s with " +
                   std::to_string(result.changes) + " changes in " +
                   std::to_string(result.transactions) + " transactions";
  } else {
    result.ok = true;
    result.seconds = seconds_between(started_at, listener.finished_at());
    result.cpu_seconds = listener.cpu_at_finish();
  }
  return result;
}

// The reference: pg_recvlogical (pinned to `cpu` when >= 0, the same as
// `taskset -c <cpu>`, without timing taskset's own exec) drains `slot` up to
// `end_lsn`, writing the pgoutput messages to /dev/null.
RunResult run_reference(const std::string& pg_recvlogical, const std::string& conninfo,
                        const std::string& slot, Lsn end_lsn, int cpu) {
  RunResult result;
  std::vector<std::string> args = {pg_recvlogical, "-d",
                                   conninfo,       "--slot",
                                   slot,           "--start",
                                   "-o",           "proto_version=1",
                                   "-o",           std::string("publication_names=") + kPublication,
                                   "-E",           pg::format_lsn(end_lsn),
                                   "-f",           "/dev/null",
                                   "--no-loop"};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  auto started_at = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    result.error = std::string("fork: ") + std::strerror(errno);
    return result;
  }
  if (pid == 0) {
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    execv(argv[0], argv.data());
    std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  auto finished_at = Clock::now();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    result.error = "pg_recvlogical failed (status " + std::to_string(status) + ")";
    return result;
  }
  result.ok = true;
  result.seconds = seconds_between(started_at, finished_at);
  auto tv = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  result.cpu_seconds = tv(usage.ru_utime) + tv(usage.ru_stime);
  return result;
}

// pg_recvlogical exits 0 also when it merely lost the connection with
// --no-loop; make sure it really streamed up to `end_lsn` (its final
// feedback confirmed it on the slot).
Result<void> check_slot_confirmed(pg::Connection& conn, const std::string& slot, Lsn end_lsn) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto result =
        run_sql(conn, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = " +
                          pg::quote_literal(slot));
    if (!result) return result.error();
    auto text = pg::get_value(result->get(), 0, 0);
    auto confirmed = pg::parse_lsn(text.value_or(""));
    if (confirmed && *confirmed >= end_lsn) return {};
    std::this_thread::sleep_for(100ms);
  }
  return Error{"not_drained",
               "pg_recvlogical exited but slot " + slot + " was not confirmed up to " +
                   pg::format_lsn(end_lsn),
               ""};
}

std::string peak_rss() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) {
      long kb = std::atol(line.c_str() + 6);
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, "%.1f MiB", static_cast<double>(kb) / 1024.0);
      return buffer;
    }
  }
  return "unknown";
}

std::string find_pg_recvlogical(const Options& options) {
  if (!options.pg_recvlogical.empty()) return options.pg_recvlogical;
  const char* bindir = std::getenv("SHAPEPROXY_PG_BINDIR");
  fs::path dir = bindir && *bindir ? fs::path(bindir) : fs::path(kDefaultBinDir);
  return (dir / "pg_recvlogical").string();
}

// ---------------------------------------------------------------------------

int run_benchmark(const Options& options, embedded::EmbeddedPostgres& cluster,
                  const std::string& pg_recvlogical) {
  const std::string conninfo = cluster.conninfo(kDatabase);

  // Placement: consumer on one CPU, the PostgreSQL tree on another.
  int consumer_cpu = -1;
  if (options.pin) {
    auto cpus = allowed_cpus();
    if (!cpus.empty()) consumer_cpu = cpus[0];
    if (cpus.size() >= 2) {
      pid_t postmaster = read_postmaster_pid(cluster.data_dir() / "pgdata");
      int pinned = postmaster > 0 ? pin_postgres_tree(postmaster, cpus[1]) : 0;
      if (pinned == 0) {
        std::printf("note: could not pin PostgreSQL; it runs on any CPU\n");
      } else {
        std::printf(
            "pinning: consumers on CPU %d, PostgreSQL (%d processes + future walsenders) on "
            "CPU %d\n",
            consumer_cpu, pinned, cpus[1]);
      }
    } else {
      std::printf("pinning: consumers on CPU %d, PostgreSQL unpinned (one CPU allowed)\n",
                  consumer_cpu);
    }
  } else {
    std::printf("pinning: none (--no-pin)\n");
  }

  auto opened = pg::Connection::open(conninfo);
  if (!opened) {
    std::fprintf(stderr, "error: connect: %s\n", opened.error().to_string().c_str());
    return 1;
  }
  pg::Connection& conn = opened.value();

  // Schema, publication, and every slot before the load.
  const int slot_count = 1 + 2 * options.pairs;
  for (const std::string& sql :
       {std::string("CREATE TABLE bench_rows (id int8 PRIMARY KEY, title text, amount numeric, "
                    "created timestamptz)"),
        std::string("CREATE PUBLICATION ") + kPublication + " FOR TABLE bench_rows"}) {
    if (auto done = run_sql(conn, sql); !done) {
      std::fprintf(stderr, "error: %s\n", done.error().to_string().c_str());
      return 1;
    }
  }
  for (int i = 0; i < slot_count; ++i) {
    auto created = run_sql(conn, "SELECT pg_create_logical_replication_slot(" +
                                     pg::quote_literal(slot_name(i)) + ", 'pgoutput')");
    if (!created) {
      std::fprintf(stderr, "error: %s\n", created.error().to_string().c_str());
      return 1;
    }
  }

  // The load: `rows` rows in `transactions` autocommitted INSERTs.
  auto load_started = Clock::now();
  for (long t = 0; t < options.transactions; ++t) {
    long first = options.rows * t / options.transactions + 1;
    long last = options.rows * (t + 1) / options.transactions;
    auto inserted =
        run_sql(conn,
                "INSERT INTO bench_rows SELECT g, 'title of row ' || g, round(g * 1.37, 2), "
                "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' "
                "FROM generate_series(" +
                    std::to_string(first) + ", " + std::to_string(last) + ") g");
    if (!inserted) {
      std::fprintf(stderr, "error: %s\n", inserted.error().to_string().c_str());
      return 1;
    }
  }
  auto wal =
      run_sql(conn,
              "SELECT pg_current_wal_insert_lsn(), pg_size_pretty(pg_current_wal_insert_lsn() - "
              "(SELECT min(restart_lsn) FROM pg_replication_slots))");
  if (!wal) {
    std::fprintf(stderr, "error: %s\n", wal.error().to_string().c_str());
    return 1;
  }
  Lsn wal_after_load = pg::parse_lsn(pg::get_value(wal->get(), 0, 0).value_or("")).value_or(0);
  std::printf(
      "load: %ld rows in %ld transactions in %.1f s; WAL to decode per slot %s; "
      "WAL insert position %s\n",
      options.rows, options.transactions, seconds_between(load_started, Clock::now()),
      pg::get_value(wal->get(), 0, 1).value_or("?").c_str(),
      pg::format_lsn(wal_after_load).c_str());

  const auto expected_changes = static_cast<std::uint64_t>(options.rows);
  const auto expected_transactions = static_cast<std::uint64_t>(options.transactions);
  auto check_candidate = [&](const RunResult& run, const char* what) {
    if (!run.ok) {
      std::fprintf(stderr, "error: %s: %s\n", what, run.error.c_str());
      return false;
    }
    if (run.changes != expected_changes || run.inserts != expected_changes ||
        run.transactions != expected_transactions) {
      std::fprintf(stderr,
                   "error: %s decoded %llu changes (%llu inserts) in %llu transactions; expected "
                   "%llu inserts in %llu transactions\n",
                   what, static_cast<unsigned long long>(run.changes),
                   static_cast<unsigned long long>(run.inserts),
                   static_cast<unsigned long long>(run.transactions),
                   static_cast<unsigned long long>(expected_changes),
                   static_cast<unsigned long long>(expected_transactions));
      return false;
    }
    if (run.shape_rows != run.shape_rows_expected) {
      std::fprintf(stderr, "error: %s: the shapes hold %llu rows, expected %llu\n", what,
                   static_cast<unsigned long long>(run.shape_rows),
                   static_cast<unsigned long long>(run.shape_rows_expected));
      return false;
    }
    return true;
  };

  // Warm-up (unmeasured): also yields the exact end LSN of the last load
  // transaction, the point where both sides stop. (pg_current_wal_lsn() is
  // the WAL *write* position: with synchronous_commit=off it can lag behind
  // the last commit, and an end point taken from it would cut the load short.)
  auto warmup =
      run_candidate(conninfo, slot_name(0), expected_transactions, std::numeric_limits<Lsn>::max(),
                    consumer_cpu, options.run_timeout, options);
  if (!check_candidate(warmup, "warm-up candidate")) return 1;
  const Lsn end_lsn = warmup.last_end_lsn;
  std::printf("warm-up: candidate %.2f s, %llu changes in %llu transactions, end %s\n",
              warmup.seconds, static_cast<unsigned long long>(warmup.changes),
              static_cast<unsigned long long>(warmup.transactions),
              pg::format_lsn(end_lsn).c_str());

  std::vector<double> ratios, candidate_rates, reference_rates;
  // Consumer CPU per change: less sensitive to a busy machine than wall time,
  // and shows the ingest's headroom when the walsender bounds both sides.
  std::vector<double> candidate_cpu_us, reference_cpu_us;
  const double rows = static_cast<double>(options.rows);
  for (int pair = 0; pair < options.pairs; ++pair) {
    const std::string reference_slot = slot_name(1 + 2 * pair);
    const std::string candidate_slot = slot_name(2 + 2 * pair);

    auto reference = run_reference(pg_recvlogical, conninfo, reference_slot, end_lsn, consumer_cpu);
    if (!reference.ok) {
      std::fprintf(stderr, "error: reference: %s\n", reference.error.c_str());
      return 1;
    }
    if (auto drained = check_slot_confirmed(conn, reference_slot, end_lsn); !drained) {
      std::fprintf(stderr, "error: %s\n", drained.error().to_string().c_str());
      return 1;
    }
    auto candidate = run_candidate(conninfo, candidate_slot, expected_transactions, end_lsn,
                                   consumer_cpu, options.run_timeout, options);
    if (!check_candidate(candidate, "candidate")) return 1;

    double reference_rate = rows / reference.seconds;
    double candidate_rate = rows / candidate.seconds;
    double ratio = candidate_rate / reference_rate;
    reference_rates.push_back(reference_rate);
    candidate_rates.push_back(candidate_rate);
    ratios.push_back(ratio);
    candidate_cpu_us.push_back(candidate.cpu_seconds * 1e6 / rows);
    reference_cpu_us.push_back(reference.cpu_seconds * 1e6 / rows);
    std::printf(
        "pair %d/%d: pg_recvlogical %.2f s %.0f changes/s (cpu %.2f s) | candidate %.2f s "
        "%.0f changes/s (cpu %.2f s) | ratio %.2f\n",
        pair + 1, options.pairs, reference.seconds, reference_rate, reference.cpu_seconds,
        candidate.seconds, candidate_rate, candidate.cpu_seconds, ratio);
    std::fflush(stdout);
  }

  std::printf("consumer CPU per change (median): candidate %.2f us, pg_recvlogical %.2f us\n",
              median(candidate_cpu_us), median(reference_cpu_us));
  std::printf("peak RSS (VmHWM) of bench_ingest: %s\n", peak_rss().c_str());
  std::printf(
      "ratio %.2f (median of %zu; min %.2f, max %.2f) candidate %.0f changes/s, "
      "pg_recvlogical %.0f changes/s\n",
      median(ratios), ratios.size(), *std::min_element(ratios.begin(), ratios.end()),
      *std::max_element(ratios.begin(), ratios.end()), median(candidate_rates),
      median(reference_rates));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = parse_args(argc, argv);
  if (!parsed) {
    usage(argv[0]);
    return 2;
  }
  Options options = *parsed;
  spdlog::set_level(options.verbose ? spdlog::level::info : spdlog::level::warn);
  setvbuf(stdout, nullptr, _IOLBF, 0);

  const std::string pg_recvlogical = find_pg_recvlogical(options);
  if (access(pg_recvlogical.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "error: %s is not executable (install postgresql-15, or pass "
                 "--pg-recvlogical PATH)\n",
                 pg_recvlogical.c_str());
    return 1;
  }

  std::string root = "/tmp/shapeproxy-bench-XXXXXX";
  if (mkdtemp(root.data()) == nullptr) {
    std::fprintf(stderr, "error: mkdtemp: %s\n", std::strerror(errno));
    return 1;
  }
  chmod(root.c_str(), 0711);  // as root, the server runs as another user

  embedded::EmbeddedPostgresOptions cluster_options;
  cluster_options.data_dir = fs::path(root) / "cluster";
  cluster_options.keep_data_on_stop = false;
  cluster_options.extra_settings = {
      "max_replication_slots = 30", "max_wal_senders = 30", "max_wal_size = 4GB",
      "checkpoint_timeout = 30min",
      // Durability does not matter here and the load should not dominate.
      "fsync = off", "synchronous_commit = off", "full_page_writes = off",
      // No background transactions or WAL in the middle of the measurement.
      "autovacuum = off"};
  std::printf("bench_ingest: %ld rows in %ld transactions, %d pairs, pg_recvlogical %s\n",
              options.rows, options.transactions, options.pairs, pg_recvlogical.c_str());
  if (options.shapes > 0) {
    std::printf("candidate applies to %d shapes where %s, %s\n", options.shapes,
                options.where == bench::ShapeWhere::kEquality ? "id = $1" : "id % N = k",
                options.use_index ? "routed by ShapeIndex" : "every shape evaluated (--no-index)");
  }
  auto started = embedded::EmbeddedPostgres::start(std::move(cluster_options));
  if (!started) {
    std::fprintf(stderr, "error: cannot start PostgreSQL: %s\n",
                 started.error().to_string().c_str());
    std::error_code ec;
    fs::remove_all(root, ec);
    return 1;
  }
  std::unique_ptr<embedded::EmbeddedPostgres> cluster = std::move(started).value();
  Reaper reaper = start_reaper(root, cluster->data_dir() / "pgdata", cluster->socket_dir());

  options.state_root = (fs::path(root) / "shape-state").string();
  int code = run_benchmark(options, *cluster, pg_recvlogical);

  const fs::path socket_dir = cluster->socket_dir();
  cluster.reset();  // stops the server and removes its data dir
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::remove_all(socket_dir, ec);  // a private dir (under root, or a mkdtemp dir in /tmp)
  stop_reaper(reaper);
  return code;
}
