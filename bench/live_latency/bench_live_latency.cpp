// bench_live_latency: commit-to-client latency of live long-polls. Many
// clients park `live=true` requests on one shape; the benchmark commits one
// INSERT at a time and measures, for every client, the time from the moment
// COMMIT returned to the moment the first byte of that client's response
// arrived in its socket (the kernel's receive timestamp, SO_TIMESTAMPNS), so
// the client's own reading and checking does not inflate the figure. Every
// response is still read in full and checked (status 200, the inserted row,
// the up-to-date control message) before the client re-parks.
//
// This is the client half; bench/live_latency/run.sh starts PostgreSQL and
// the proxy and runs it (see bench/README.md). Procedure:
//  1. Raise RLIMIT_NOFILE. Sync the shape once on a connection of its own
//     (offset=-1, then catch-up requests until electric-up-to-date) to learn
//     its handle and offset; read the proxy's VmRSS (the baseline). The
//     table may already hold rows (--first-id: the ids inserted next).
//  2. Open --clients keep-alive connections.
//  3. Park one live request per connection at that offset (--sse: open one
//     event stream per connection, live_sse=true, which stays open).
//  4. For --warmup + --commits rounds: wait --settle-ms, then until the
//     proxy's /metrics reports every client's read parked (the proxy's VmRSS
//     then, in the first round, over the baseline, gives the RSS per parked
//     client), BEGIN; INSERT one row; COMMIT via libpq, take t0
//     right after COMMIT returns; run the event loop until every client has
//     read and checked a response containing the new id (each re-parks at its
//     new offset at once). The warm-up rounds are not recorded.
//  5. Print p50, p99 and max over all samples (clients x commits) of the
//     arrival latency (kernel timestamp of the response's first bytes), the
//     same for the processed latency (response read and checked), and the
//     closing line `p99 X ms (target 10 ms)` (arrival).
//
// The connections are split over --threads event-loop threads (default 2,
// each with its own io_context) so that the client's own cost per response
// (re-park write, read, check) is not what the figure measures; the main
// thread commits. Times are CLOCK_REALTIME (the clock of the kernel's
// receive timestamps). A response read before t0 counts as 0 ms. By default a
// response is checked with a scan for the row's insert ("id":"<n>" and
// "operation":"insert"); --full-parse parses the whole JSON body instead, as
// an application would. Slowness never fails the benchmark; wrong answers
// (non-200, a missing row, a closed connection, a round that does not
// complete within --round-timeout) exit 1. With --sse the arrival is the
// receive timestamp of the first data frame of the round (the insert), the
// processed time when its up-to-date control message was read.
#include <libpq-fe.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Nanos = std::int64_t;  // CLOCK_REALTIME nanoseconds
using json = nlohmann::json;

struct Options {
  std::string host = "127.0.0.1";
  std::string port;
  std::string conninfo;
  std::string table = "bench_live";
  int clients = 1000;
  int commits = 20;
  int warmup = 2;
  std::chrono::milliseconds settle{100};
  std::chrono::seconds round_timeout{30};
  int proxy_pid = 0;          // when set: report the proxy's CPU per response too
  bool defer_repark = false;  // diagnostic: re-park only after the round completes
  int threads = 2;
  bool full_parse = false;  // parse the whole JSON body (an application's cost)
  bool sse = false;         // one SSE stream per client (live_sse=true) instead of long-polls
  bool wait_parked = true;  // before each commit, wait until the proxy reports every read parked
  bool verbose = false;
  long first_id = 1;  // id of the first inserted row (past rows the table already holds)
};

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --port PORT --conninfo CONNINFO [--host H] [--table T]\n"
               "          [--clients N] [--commits N] [--warmup N] [--settle-ms MS]\n"
               "          [--round-timeout S] [--proxy-pid PID] [--threads N]\n"
               "          [--full-parse] [--defer-repark] [--sse] [--no-wait-parked] [--verbose]\n"
               "          [--first-id N]\n"
               "Commit-to-client latency of N parked live long-polls on one shape.\n",
               argv0);
}

std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto text = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    auto number = [&](long min) -> std::optional<long> {
      auto t = text();
      if (!t) return std::nullopt;
      char* end = nullptr;
      long v = std::strtol(t->c_str(), &end, 10);
      if (end == t->c_str() || *end != '\0' || v < min) return std::nullopt;
      return v;
    };
    std::optional<long> n;
    std::optional<std::string> s;
    if (arg == "--host" && (s = text())) {
      o.host = *s;
    } else if (arg == "--port" && (s = text())) {
      o.port = *s;
    } else if (arg == "--conninfo" && (s = text())) {
      o.conninfo = *s;
    } else if (arg == "--table" && (s = text())) {
      o.table = *s;
    } else if (arg == "--clients" && (n = number(1))) {
      o.clients = static_cast<int>(*n);
    } else if (arg == "--commits" && (n = number(1))) {
      o.commits = static_cast<int>(*n);
    } else if (arg == "--warmup" && (n = number(0))) {
      o.warmup = static_cast<int>(*n);
    } else if (arg == "--settle-ms" && (n = number(0))) {
      o.settle = std::chrono::milliseconds(*n);
    } else if (arg == "--round-timeout" && (n = number(1))) {
      o.round_timeout = std::chrono::seconds(*n);
    } else if (arg == "--proxy-pid" && (n = number(1))) {
      o.proxy_pid = static_cast<int>(*n);
    } else if (arg == "--threads" && (n = number(1))) {
      o.threads = static_cast<int>(*n);
    } else if (arg == "--full-parse") {
      o.full_parse = true;
    } else if (arg == "--defer-repark") {
      o.defer_repark = true;
    } else if (arg == "--sse") {
      o.sse = true;
    } else if (arg == "--no-wait-parked") {
      o.wait_parked = false;
    } else if (arg == "--verbose") {
      o.verbose = true;
    } else if (arg == "--first-id" && (n = number(1))) {
      o.first_id = *n;
    } else {
      return std::nullopt;
    }
  }
  if (o.port.empty() || o.conninfo.empty()) return std::nullopt;
  return o;
}

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "bench_live_latency: %s\n", message.c_str());
  std::exit(1);
}

// User + system CPU seconds of this process so far.
double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// User + system CPU seconds of another process (0 when unreadable).
double process_cpu_seconds(int pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char line[4096];
  size_t n = std::fread(line, 1, sizeof line - 1, f);
  std::fclose(f);
  line[n] = '\0';
  // Fields after the parenthesised command name; utime and stime are the
  // 14th and 15th fields, i.e. the 12th and 13th after ')'.
  const char* p = std::strrchr(line, ')');
  if (p == nullptr) return 0;
  unsigned long utime = 0, stime = 0;
  if (std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
      2) {
    return 0;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A field of /proc/<pid>/status in kB ("VmRSS", "VmHWM"; 0 when unreadable).
long process_status_kb(int pid, const char* field) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (f == nullptr) return 0;
  char line[256];
  long kb = 0;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = std::strtol(line + n + 1, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb;
}

Nanos to_nanos(const timespec& t) { return Nanos{t.tv_sec} * 1'000'000'000 + t.tv_nsec; }

// Now, on the clock of SO_TIMESTAMPNS receive timestamps.
Nanos realtime_now() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return to_nanos(t);
}

double ms(Nanos d) { return static_cast<double>(d) / 1e6; }

// Nearest-rank percentile of sorted values (p in [0, 100]).
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// 1,000 sockets plus libpq and stdio need more than the common soft limit
// of 1024 descriptors: raise the soft limit to the hard one.
void raise_nofile(int needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) die("getrlimit failed");
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < static_cast<rlim_t>(needed) + 64) {
    die("RLIMIT_NOFILE is " + std::to_string(limit.rlim_cur) + ", need " +
        std::to_string(needed + 64) + " (ulimit -n)");
  }
}

// Whether a shape response body (a JSON array of messages) holds the insert
// of row `id`. Electric serialises column values as strings; numbers are
// accepted too.
bool has_insert_parsed(const std::string& body, const std::string& id) {
  json messages = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!messages.is_array()) die("response body is not a JSON array: " + body.substr(0, 200));
  for (const auto& m : messages) {
    auto headers = m.find("headers");
    auto value = m.find("value");
    if (headers == m.end() || value == m.end() || !value->is_object()) continue;
    auto op = headers->find("operation");
    if (op == headers->end() || *op != "insert") continue;
    auto row_id = value->find("id");
    if (row_id == value->end()) continue;
    if (row_id->is_string() ? row_id->get<std::string>() == id : row_id->dump() == id) return true;
  }
  return false;
}

// The same check without a JSON parse: the body must hold an insert and the
// row's `"id":"<id>"` (the table's only column named id; its other columns
// never contain that text).
bool has_insert_scan(const std::string& body, const std::string& id) {
  if (body.empty() || body.front() != '[')
    die("response body is not a JSON array: " + body.substr(0, 200));
  if (body.find("\"operation\":\"insert\"") == std::string::npos) return false;
  std::string needle = "\"id\":\"" + id + "\"";
  return body.find(needle) != std::string::npos;
}

// libpq connection for the writes; every statement must succeed.
class Writer {
 public:
  explicit Writer(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) die(std::string("libpq: ") + PQerrorMessage(conn_));
    // The test cluster runs with synchronous_commit=off, where COMMIT returns
    // before its WAL is flushed and the walsender only sees it at the WAL
    // writer's next flush (wal_writer_delay, 200 ms): that would measure the
    // cluster's setting, not the proxy. With it on, COMMIT returns after the
    // flush (cheap: fsync=off) and the walsender is woken at once.
    exec("SET synchronous_commit = on");
  }
  ~Writer() { PQfinish(conn_); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void exec(const std::string& sql, std::vector<std::string> params = {}) {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
    auto status = PQresultStatus(r);
    std::string error = PQresultErrorMessage(r);
    PQclear(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) die("SQL failed: " + error);
  }

 private:
  PGconn* conn_;
};

// One keep-alive connection and the live request parked on it.
struct Client {
  Client(asio::io_context& io, size_t loop) : socket(io), loop(loop) {}
  tcp::socket socket;
  beast::flat_buffer buffer;  // received bytes the parser has not consumed yet
  http::request<http::empty_body> request;
  std::optional<http::response_parser<http::string_body>> parser;
  Nanos first_bytes = 0;  // receive timestamp of the current response's first bytes
  // --sse: the stream's parser (chunk bodies go to sse_text), the event-stream
  // bytes not yet split into frames, the receive timestamp of the recvmsg that
  // held the next frame's first byte, and this round's progress: the arrival
  // of its first data frame and whether its row was seen.
  std::optional<http::response_parser<http::empty_body>> sse_parser;
  std::string sse_text;
  // Beast keeps a reference to the chunk callback: it lives here.
  std::function<std::size_t(std::uint64_t, beast::string_view, beast::error_code&)> on_chunk;
  Nanos frame_started = 0;
  Nanos round_first = 0;
  bool row_seen = false;
  std::string offset;       // electric-offset of the last response
  std::string cursor;       // electric-cursor of the last live response
  int answered_round = -1;  // the last round this client received its row in
  size_t loop;              // the event loop (thread) this connection lives on
};

// One event-loop thread and what its clients saw in the current round.
struct Loop {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  // This round's rows: when the response's first bytes arrived, and when it
  // was read and checked. Read by main after the round.
  std::vector<Nanos> arrivals;
  std::vector<Nanos> processed;
  std::vector<Client*> deferred;  // --defer-repark: answered, not yet re-parked
  // recvmsg lands here first, so a client's own buffer holds only what its
  // parser has not consumed (10,000 clients x 64 KiB of buffers would be 640 MB).
  std::vector<char> scratch = std::vector<char>(64 * 1024);
};

class Bench {
 public:
  explicit Bench(Options options) : options_(std::move(options)) {
    for (int i = 0; i < options_.threads; ++i) loops_.push_back(std::make_unique<Loop>());
  }

  ~Bench() {
    for (auto& loop : loops_) {
      loop->work.reset();
      loop->io.stop();
    }
    for (auto& t : threads_) t.join();
  }

  int run() {
    raise_nofile(options_.clients);
    Writer writer(options_.conninfo);
    endpoints_ = tcp::resolver(loops_[0]->io).resolve(options_.host, options_.port);

    // 1. Sync the shape once on a connection of its own: the snapshot, then
    // catch-up until up to date.
    std::string offset = "-1";
    const auto sync_started = std::chrono::steady_clock::now();
    std::size_t sync_bytes = 0;
    {
      tcp::socket socket(loops_[0]->io);
      asio::connect(socket, endpoints_);
      beast::flat_buffer buffer;
      for (int i = 0;; ++i) {
        if (i > 1000) die("shape never reached up-to-date");
        std::string target = "/v1/shape?table=" + options_.table + "&offset=" + offset;
        if (!handle_.empty()) target += "&handle=" + handle_;
        auto response = get(socket, buffer, target);
        if (response.result_int() != 200) {
          die("sync " + target + " answered " + std::to_string(response.result_int()) + ": " +
              response.body());
        }
        sync_bytes += response.body().size();
        handle_ = std::string(response["electric-handle"]);
        offset = std::string(response["electric-offset"]);
        if (handle_.empty() || offset.empty()) die("sync response without handle/offset");
        if (response.find("electric-up-to-date") != response.end()) break;
      }
    }
    const double sync_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - sync_started).count();
    // The proxy's memory with the shape and no client: the baseline of the
    // RSS per parked client.
    const long rss_before_kb =
        options_.proxy_pid != 0 ? process_status_kb(options_.proxy_pid, "VmRSS") : 0;

    // 2. Connections (synchronous: this is setup, not measured).
    clients_.reserve(options_.clients);
    for (int i = 0; i < options_.clients; ++i) {
      const size_t loop = static_cast<size_t>(i) % loops_.size();
      auto c = std::make_unique<Client>(loops_[loop]->io, loop);
      asio::connect(c->socket, endpoints_);
      c->socket.set_option(tcp::no_delay(true));
      int on = 1;  // kernel receive timestamps (SCM_TIMESTAMPNS) with recvmsg
      if (::setsockopt(c->socket.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0)
        die(std::string("SO_TIMESTAMPNS: ") + std::strerror(errno));
      clients_.push_back(std::move(c));
    }

    std::printf(
        "shape %s synced at offset %s (%zu bytes in %.2f s); %d connections on %d client "
        "threads, %s\n",
        handle_.c_str(), offset.c_str(), sync_bytes, sync_s, options_.clients, options_.threads,
        options_.sse ? "one SSE stream each" : "long-polls");

    // 3. Park every client (on its loop), then run the loops.
    for (auto& c : clients_) {
      c->offset = offset;
      Client* client = c.get();
      if (options_.sse) {
        asio::post(loops_[c->loop]->io, [this, client] { open_stream(*client); });
      } else {
        asio::post(loops_[c->loop]->io, [this, client] { park(*client); });
      }
    }
    for (auto& loop : loops_) threads_.emplace_back([l = loop.get()] { l->io.run(); });

    // 4. Rounds: settle, commit, wait for every client's row.
    const int rounds = options_.warmup + options_.commits;
    samples_.reserve(static_cast<size_t>(options_.commits) * options_.clients);
    processed_samples_.reserve(samples_.capacity());
    std::vector<double> slowest_per_round, slowest_processed_per_round;
    long next_id = options_.first_id;
    double cpu_at_first_measured = 0, proxy_cpu_at_first_measured = 0;
    long rss_parked_kb = 0;
    for (int round = 0; round < rounds; ++round) {
      std::this_thread::sleep_for(options_.settle);  // re-parked requests reach the server
      if (options_.wait_parked) wait_parked();
      if (round == 0 && options_.proxy_pid != 0)
        rss_parked_kb = process_status_kb(options_.proxy_pid, "VmRSS");
      if (round == options_.warmup) {
        cpu_at_first_measured = cpu_seconds();
        proxy_cpu_at_first_measured = process_cpu_seconds(options_.proxy_pid);
      }
      const bool recording = round >= options_.warmup;
      const std::string id = std::to_string(next_id++);
      {
        std::lock_guard lock(mu_);
        expected_id_ = id;
        received_ = 0;
        round_ = round;
      }
      writer.exec("BEGIN");
      writer.exec(
          "INSERT INTO " + options_.table +
              " (id, title, amount, done, created) VALUES ($1::int8, 'row ' || $1, $1::numeric "
              "* 1.25, false, now())",
          {id});
      writer.exec("COMMIT");
      const Nanos t0 = realtime_now();
      const auto deadline = std::chrono::steady_clock::now() + options_.round_timeout;
      {
        std::unique_lock lock(mu_);
        if (!all_received_.wait_until(lock, deadline,
                                      [&] { return received_ >= options_.clients; })) {
          die("round " + std::to_string(round) + ": only " + std::to_string(received_) + " of " +
              std::to_string(options_.clients) + " clients got row " + id + " within " +
              std::to_string(options_.round_timeout.count()) + " s");
        }
      }
      // Every client has its row: no loop touches `arrivals` until the next round.
      std::optional<Nanos> first, last, last_processed;
      for (auto& loop : loops_) {
        for (Nanos at : loop->arrivals) {
          if (!first || at < *first) first = at;
          if (!last || at > *last) last = at;
          if (recording) samples_.push_back(std::max(0.0, ms(at - t0)));
        }
        for (Nanos at : loop->processed) {
          if (!last_processed || at > *last_processed) last_processed = at;
          if (recording) processed_samples_.push_back(std::max(0.0, ms(at - t0)));
        }
        loop->arrivals.clear();
        loop->processed.clear();
        if (!loop->deferred.empty()) {
          asio::post(loop->io, [this, l = loop.get()] {
            for (Client* c : l->deferred) park(*c);
            l->deferred.clear();
          });
        }
      }
      double slowest = std::max(0.0, ms(*last - t0));
      if (recording) {
        slowest_per_round.push_back(slowest);
        slowest_processed_per_round.push_back(std::max(0.0, ms(*last_processed - t0)));
      }
      if (options_.verbose) {
        std::printf(
            "round %d%s: first arrival %.2f ms, last arrival %.2f ms, last processed %.2f ms\n",
            round, recording ? "" : " (warm-up)", std::max(0.0, ms(*first - t0)), slowest,
            std::max(0.0, ms(*last_processed - t0)));
      }
    }

    // 5. Report. The client's CPU per response (write the re-park, read and
    // check the answer) shows how much of the latency is the client's own.
    double client_cpu = cpu_seconds() - cpu_at_first_measured;
    double proxy_cpu = process_cpu_seconds(options_.proxy_pid) - proxy_cpu_at_first_measured;
    std::sort(samples_.begin(), samples_.end());
    std::sort(processed_samples_.begin(), processed_samples_.end());
    std::sort(slowest_per_round.begin(), slowest_per_round.end());
    std::sort(slowest_processed_per_round.begin(), slowest_processed_per_round.end());
    std::printf("%zu samples (%d commits x %d clients, after %d warm-up commits)\n",
                samples_.size(), options_.commits, options_.clients, options_.warmup);
    auto line = [](const char* what, const std::vector<double>& sorted,
                   const std::vector<double>& slowest) {
      std::printf(
          "%s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; last client per commit: "
          "median %.2f ms\n",
          what, percentile(sorted, 50), percentile(sorted, 90), percentile(sorted, 99),
          sorted.back(), percentile(slowest, 50));
    };
    line("arrival (first bytes in the client's socket)", samples_, slowest_per_round);
    line("processed (read and checked by the client)", processed_samples_,
         slowest_processed_per_round);
    std::printf("client CPU %.1f us per response (%d threads, %s)",
                client_cpu * 1e6 / samples_.size(), options_.threads,
                options_.full_parse ? "full JSON parse" : "scan");
    if (options_.proxy_pid != 0) {
      // Each response's share includes reading the re-park request after it.
      std::printf(", proxy CPU %.1f us per response", proxy_cpu * 1e6 / samples_.size());
    }
    std::printf("\n");
    if (options_.proxy_pid != 0) {
      std::printf(
          "proxy RSS %.1f MB with the shape, %.1f MB with %d clients parked: %.1f kB per "
          "parked client\n",
          rss_before_kb / 1024.0, rss_parked_kb / 1024.0, options_.clients,
          static_cast<double>(rss_parked_kb - rss_before_kb) / options_.clients);
    }
    std::printf("p99 %.2f ms (target 10 ms)\n", percentile(samples_, 99));
    return 0;
  }

 private:
  // A synchronous GET (setup, and the main thread's metrics polls).
  http::response<http::string_body> get(tcp::socket& socket, beast::flat_buffer& buffer,
                                        const std::string& target) {
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, options_.host);
    http::write(socket, request);
    // The sync of a big shape reads whole snapshot chunks (Beast's default
    // limit is 8 MB).
    http::response_parser<http::string_body> parser;
    parser.body_limit(1024 * 1024 * 1024);
    http::read(socket, buffer, parser);
    return parser.release();
  }

  // Waits until the proxy reports every client's read parked
  // (shapeproxy_parked_requests in /metrics), so a commit finds every client
  // waiting; gives up after --round-timeout with a note (slowness never fails
  // the benchmark). On the main thread, over a connection of its own.
  void wait_parked() {
    asio::io_context io;
    tcp::socket socket(io);
    asio::connect(socket, endpoints_);
    beast::flat_buffer buffer;
    const auto deadline = std::chrono::steady_clock::now() + options_.round_timeout;
    long parked = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      auto response = get(socket, buffer, "/metrics");
      const std::string& body = response.body();
      static const std::string kName = "\nshapeproxy_parked_requests ";
      auto at = body.find(kName);
      if (response.result_int() != 200 || at == std::string::npos)
        die("/metrics without shapeproxy_parked_requests");
      parked = std::strtol(body.c_str() + at + kName.size(), nullptr, 10);
      if (parked >= options_.clients) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::printf("note: only %ld of %d reads parked after %lld s; committing anyway\n", parked,
                options_.clients, static_cast<long long>(options_.round_timeout.count()));
  }

  // --sse: opens the client's event stream at its offset; the stream stays
  // open across rounds. On the client's loop.
  void open_stream(Client& c) {
    std::string target = "/v1/shape?table=" + options_.table +
                         "&live=true&live_sse=true&handle=" + handle_ + "&offset=" + c.offset;
    c.request = http::request<http::empty_body>{http::verb::get, target, 11};
    c.request.set(http::field::host, options_.host);
    http::async_write(c.socket, c.request, [this, &c](beast::error_code ec, size_t) {
      if (ec) die("write: " + ec.message());
      c.sse_parser.emplace();
      c.sse_parser->eager(true);
      c.sse_parser->body_limit(boost::none);
      c.on_chunk = [&c](std::uint64_t, beast::string_view body, beast::error_code&) {
        c.sse_text.append(body.data(), body.size());
        return body.size();
      };
      c.sse_parser->on_chunk_body(c.on_chunk);
      wait_readable(c);
    });
  }

  // --sse: one complete event-stream frame (without its blank line) that
  // began in a recvmsg stamped `started`. A round is answered by the insert of
  // its row and then the up-to-date control message. On the client's loop.
  void on_frame(Client& c, std::string_view frame, Nanos started) {
    if (frame.empty() || frame.front() == ':') return;  // a comment (keep-alive)
    if (frame.substr(0, 6) != "data: ") die("unexpected SSE frame: " + std::string(frame));
    std::string_view data = frame.substr(6);
    if (c.round_first == 0) c.round_first = started;
    std::string id;
    int round;
    {
      std::lock_guard lock(mu_);
      id = expected_id_;
      round = round_;
    }
    if (data.find("\"control\":\"up-to-date\"") == std::string_view::npos) {
      std::string message(data);
      bool found = options_.full_parse ? has_insert_parsed("[" + message + "]", id)
                                       : has_insert_scan("[" + message + "]", id);
      if (found) c.row_seen = true;
      return;
    }
    const Nanos first = c.round_first;
    const bool found = c.row_seen;
    c.round_first = 0;
    c.row_seen = false;
    if (!found || c.answered_round == round) return;  // up to date without this round's row
    c.answered_round = round;
    Loop& loop = *loops_[c.loop];
    loop.arrivals.push_back(first);
    loop.processed.push_back(realtime_now());
    std::lock_guard lock(mu_);
    if (++received_ == options_.clients) all_received_.notify_one();
  }

  // --sse: what the stream parser passed on, split into frames.
  void split_frames(Client& c, Nanos received) {
    size_t start = 0;
    for (size_t end; (end = c.sse_text.find("\n\n", start)) != std::string::npos; start = end + 2) {
      on_frame(c, std::string_view(c.sse_text).substr(start, end - start), c.frame_started);
      c.frame_started = received;  // the next frame's first byte came with this recvmsg (or later)
    }
    c.sse_text.erase(0, start);
  }

  // Sends the live request at the client's offset and reads its response.
  // On the client's loop.
  void park(Client& c) {
    std::string target = "/v1/shape?table=" + options_.table + "&live=true&handle=" + handle_ +
                         "&offset=" + c.offset;
    if (!c.cursor.empty()) target += "&cursor=" + c.cursor;
    c.request = http::request<http::empty_body>{http::verb::get, target, 11};
    c.request.set(http::field::host, options_.host);
    http::async_write(c.socket, c.request, [this, &c](beast::error_code ec, size_t) {
      if (ec) die("write: " + ec.message());
      c.parser.emplace();
      c.parser->body_limit(64 * 1024 * 1024);
      c.first_bytes = 0;
      wait_readable(c);
    });
  }

  void wait_readable(Client& c) {
    c.socket.async_wait(tcp::socket::wait_read, [this, &c](beast::error_code ec) {
      if (ec) die("wait: " + ec.message());
      read_available(c);
    });
  }

  // Reads what the socket holds with recvmsg, keeping the kernel's receive
  // timestamp of the response's first bytes, and feeds it to the parser;
  // waits again until the response is complete. On the client's loop.
  void read_available(Client& c) {
    std::vector<char>& scratch = loops_[c.loop]->scratch;
    while (true) {
      iovec iov{scratch.data(), scratch.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(c.socket.native_handle(), &msg, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return wait_readable(c);
      if (n < 0) die(std::string("recvmsg: ") + std::strerror(errno));
      if (n == 0) die("the server closed a keep-alive connection");
      auto space = c.buffer.prepare(static_cast<size_t>(n));
      std::memcpy(space.data(), scratch.data(), static_cast<size_t>(n));
      c.buffer.commit(static_cast<size_t>(n));
      Nanos received = 0;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts{};
          std::memcpy(&ts, CMSG_DATA(cm), sizeof ts);
          received = to_nanos(ts);
        }
      }
      if (received == 0) die("recvmsg without SCM_TIMESTAMPNS (SO_TIMESTAMPNS unsupported?)");
      if (options_.sse) {
        if (c.sse_text.empty()) c.frame_started = received;
        feed(c, *c.sse_parser);
        if (c.sse_parser->is_header_done() && c.sse_parser->get().result_int() != 200) {
          die("SSE request answered " + std::to_string(c.sse_parser->get().result_int()));
        }
        if (c.sse_parser->is_done()) {
          die("the proxy ended an SSE stream (its maximum stream duration, 60 s by default, "
              "is too short for this run?)");
        }
        split_frames(c, received);
        continue;
      }
      if (c.first_bytes == 0) c.first_bytes = received;
      feed(c, *c.parser);
      if (c.parser->is_done()) return on_response(c);
    }
  }

  // Hands the client's buffered bytes to `parser` as far as it takes them.
  template <class Parser>
  void feed(Client& c, Parser& parser) {
    beast::error_code ec;
    while (c.buffer.size() > 0 && !parser.is_done()) {
      size_t used = parser.put(c.buffer.data(), ec);
      c.buffer.consume(used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) die("malformed response: " + ec.message());
      if (used == 0) break;
    }
  }

  // A complete response on `c`: check it, record it, re-park. On the client's loop.
  void on_response(Client& c) {
    auto& response = c.parser->get();
    if (response.result_int() != 200) {
      die("live request answered " + std::to_string(response.result_int()) + ": " +
          response.body());
    }
    if (!c.parser->keep_alive()) die("the server closed a keep-alive connection");
    if (response["electric-handle"] != handle_) die("live response for another shape handle");
    if (response.find("electric-up-to-date") == response.end() ||
        response.body().find("\"control\":\"up-to-date\"") == std::string::npos) {
      die("live response without up-to-date: " + response.body().substr(0, 200));
    }
    std::string id;
    int round;
    {
      std::lock_guard lock(mu_);
      id = expected_id_;
      round = round_;
    }
    bool found = options_.full_parse ? has_insert_parsed(response.body(), id)
                                     : has_insert_scan(response.body(), id);
    c.offset = std::string(response["electric-offset"]);
    c.cursor = std::string(response["electric-cursor"]);
    if (c.offset.empty()) die("live response without electric-offset");
    Loop& loop = *loops_[c.loop];
    if (found && c.answered_round != round) {
      c.answered_round = round;
      loop.arrivals.push_back(c.first_bytes);
      loop.processed.push_back(realtime_now());
      std::lock_guard lock(mu_);
      if (++received_ == options_.clients) all_received_.notify_one();
    }
    // A response without the row (a long-poll timeout) just re-parks.
    // --defer-repark (diagnostic) parks answered clients after the round
    // instead, so the proxy's fan-out does not overlap with new requests.
    if (options_.defer_repark && found) {
      loop.deferred.push_back(&c);
    } else {
      park(c);
    }
  }

  Options options_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::string handle_;
  tcp::resolver::results_type endpoints_;
  // The current round; guarded by mu_.
  std::mutex mu_;
  std::condition_variable all_received_;
  int round_ = -1;
  std::string expected_id_;
  int received_ = 0;
  std::vector<double> samples_;            // arrival latencies; main thread only
  std::vector<double> processed_samples_;  // processed latencies; main thread only
};

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_args(argc, argv);
  if (!options) {
    usage(argv[0]);
    return 2;
  }
  try {
    return Bench(std::move(*options)).run();
  } catch (const std::exception& e) {
    die(e.what());
  }
}
