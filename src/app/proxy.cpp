#include "app/proxy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>

#include "api/shape_api.h"
#include "api/subset_params.h"
#include "cluster/announcer.h"
#include "cluster/data_dir_lock.h"
#include "cluster/election.h"
#include "cluster/follower_shapes.h"
#include "cluster/forwarder.h"
#include "fallback/fallback_query.h"
#include "http/handlers.h"
#include "http/server.h"
#include "logging/access_log.h"
#include "logging/log_format.h"
#include "pg/async_connection.h"
#include "pg/connection_pool.h"
#include "pg/conninfo.h"
#include "replication/replication_stream.h"
#include "shapes/shape_registry.h"
#include "shapes/subset_query.h"
#include "status/dashboard.h"
#include "status/metrics_endpoint.h"
#include "status/replication_probe.h"
#include "status/request_metrics.h"
#include "status/status_endpoint.h"
#include "status/status_monitor.h"

namespace shapeproxy::app {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// Shapes serve from direct queries exactly while the status says fallback.
// Applied after every input that can move the status (stream state,
// progress, probe, timer), so /v1/status and the shape responses' fallback
// flag never disagree for longer than one strand turn. On the shapes strand.
void apply_serving_mode(const status::ReplicationStatusMonitor& monitor,
                        shapes::ShapeRegistry& registry) {
  registry.set_serving_mode(monitor.status() == status::ServingStatus::kFallback);
}

// Feeds replicated transactions to the shapes, then acknowledges them.
// Runs on the shapes strand (the stream shares it with the registry).
class Ingest : public replication::ReplicationListener {
 public:
  void attach(std::shared_ptr<replication::ReplicationStream> stream,
              std::shared_ptr<shapes::ShapeRegistry> registry,
              std::shared_ptr<status::ReplicationStatusMonitor> monitor) {
    stream_ = stream;
    registry_ = std::move(registry);
    monitor_ = std::move(monitor);
  }

  void on_transaction(replication::Transaction transaction) override {
    // The registry acknowledges (on_durable) once the shapes are synced.
    if (registry_) registry_->apply_transaction(transaction);
    if (monitor_) monitor_->on_progress(transaction.end_lsn);
    std::size_t inserts = 0, updates = 0, deletes = 0, truncates = 0;
    for (const auto& change : transaction.changes) {
      switch (change.kind) {
        case replication::Change::Kind::kInsert:
          ++inserts;
          break;
        case replication::Change::Kind::kUpdate:
          ++updates;
          break;
        case replication::Change::Kind::kDelete:
          ++deletes;
          break;
        case replication::Change::Kind::kTruncate:
          ++truncates;
          break;
      }
    }
    logging::LogFields fields{
        {"xid", transaction.xid}, {"lsn", pg::format_lsn(transaction.commit_lsn)},
        {"inserts", inserts},     {"updates", updates},
        {"deletes", deletes},     {"truncates", truncates}};
    spdlog::info(
        "replication: transaction {} committed at {}: {} insert(s), {} update(s), "
        "{} delete(s), {} truncate(s)",
        transaction.xid, pg::format_lsn(transaction.commit_lsn), inserts, updates, deletes,
        truncates);
  }

  void on_slot_created(replication::Lsn) override {
    // Whatever happened between the old slot and this one is caught by a
    // fresh query of every shape, diffed into its log.
    if (registry_) registry_->refresh_all();
  }

  void on_progress(replication::Lsn wal_end) override {
    if (registry_) registry_->note_progress(wal_end);
    if (monitor_) monitor_->on_progress(wal_end);
    sync_serving_mode();
  }

  void on_state(replication::StreamState state, const Error* cause) override {
    if (monitor_) monitor_->on_stream_state(link_state(state), cause);
    sync_serving_mode();
    streaming_ = state == replication::StreamState::kStreaming;
    if (state == replication::StreamState::kStopped && on_stopped_)
      std::exchange(on_stopped_, {})();
    if (cause) {
      spdlog::warn("replication: {} ({})", replication::to_string(state), cause->to_string());
    } else {
      spdlog::info("replication: {}", replication::to_string(state));
    }
  }

  bool streaming() const { return streaming_; }
  // Runs once the stream reports kStopped.
  void when_stopped(std::function<void()> callback) { on_stopped_ = std::move(callback); }

 private:
  std::function<void()> on_stopped_;
  std::weak_ptr<replication::ReplicationStream> stream_;
  std::shared_ptr<shapes::ShapeRegistry> registry_;
  std::shared_ptr<status::ReplicationStatusMonitor> monitor_;

  void sync_serving_mode() {
    if (monitor_ && registry_) apply_serving_mode(*monitor_, *registry_);
  }

  static status::StreamLinkState link_state(replication::StreamState state) {
    switch (state) {
      case replication::StreamState::kStopped:
        return status::StreamLinkState::kStopped;
      case replication::StreamState::kConnecting:
        return status::StreamLinkState::kConnecting;
      case replication::StreamState::kStreaming:
        return status::StreamLinkState::kStreaming;
      case replication::StreamState::kDisconnected:
        return status::StreamLinkState::kDisconnected;
    }
    return status::StreamLinkState::kDisconnected;
  }
  std::atomic<bool> streaming_{false};
};

}  // namespace

struct Proxy::State {
  State(asio::io_context& io, config::Config config, std::string conninfo)
      : io(io),
        control(asio::make_strand(io)),
        config(std::move(config)),
        conninfo(std::move(conninfo)) {}

  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> control;
  config::Config config;
  std::string conninfo;
  Ingest ingest;
  std::shared_ptr<shapes::ShapeRegistry> registry;
  std::unique_ptr<api::ShapeApi> shape_api;
  std::shared_ptr<replication::ReplicationStream> stream;
  std::unique_ptr<http::HttpServer> server;
  std::shared_ptr<status::ReplicationStatusMonitor> monitor;
  std::shared_ptr<status::ReplicationProbe> probe;
  std::shared_ptr<status::RequestMetrics> request_metrics;
  std::shared_ptr<asio::steady_timer> monitor_ticker;
  std::shared_ptr<fallback::FallbackQuery> fallback;
  std::shared_ptr<shapes::SubsetQueries> subsets;
  asio::any_io_executor core;  // the replication/shapes strand

  // Several instances (rfc/0003). The election runs on its own strand; what
  // follows is on `control` unless said otherwise.
  std::vector<replication::TableName> tables;
  std::string instance_id;
  std::shared_ptr<cluster::Election> election;
  std::unique_ptr<cluster::Forwarder> forwarder;
  // Stays "starting": the status of a follower that cannot reach its leader.
  std::shared_ptr<status::ReplicationStatusMonitor> follower_monitor;
  // A follower's own reads of the shared shapes (rfc/0003) and the shape
  // API on them: set in start() before the server runs, never reset (SSE
  // sessions hold the service by reference); stopped when this instance
  // leads or stops. Its handler is the API's GET behind the secret.
  std::shared_ptr<cluster::FollowerShapes> follower_shapes;
  std::unique_ptr<api::ShapeApi> follower_api;
  http::Handler follower_get;
  // The leader's announcements of durable ends to its followers.
  std::shared_ptr<cluster::Announcer> announcer;
  bool initial_round_done = false;
  bool core_requested = false;  // start_core() called (once)
  bool core_started = false;
  bool may_stream = false;  // the advisory lock is held
  bool streaming_started = false;
  bool stopping = false;
  // The HTTP port (config.port until bound; any thread).
  std::atomic<std::uint16_t> bound_port{0};
  // The routes this instance serves itself once it leads (null before);
  // read by HTTP threads.
  std::mutex routes_mutex;
  std::shared_ptr<const http::Router> local_routes;

  std::shared_ptr<const http::Router> served_locally() {
    std::lock_guard lock(routes_mutex);
    return local_routes;
  }
};

Proxy::Proxy(asio::io_context& io, config::Config config, std::string database_conninfo)
    : state_(std::make_shared<State>(io, std::move(config), std::move(database_conninfo))) {}

Proxy::~Proxy() = default;

asio::any_io_executor Proxy::executor() const { return state_->control; }

namespace {

// Makes sure the publication exists and holds `tables`, retrying while the
// database is unreachable, then starts the stream. Runs in the background:
// shapes already on disk are served meanwhile.
asio::awaitable<void> prepare_and_stream(asio::any_io_executor executor, std::string conninfo,
                                         std::string publication,
                                         std::vector<replication::TableName> tables,
                                         std::shared_ptr<replication::ReplicationStream> stream) {
  asio::steady_timer retry(executor);
  for (auto delay = std::chrono::milliseconds(500);; delay = std::min(delay * 2, 30'000ms)) {
    auto connection = co_await pg::AsyncConnection::connect(executor, conninfo);
    Result<void> prepared = connection ? Result<void>{} : Result<void>(connection.error());
    if (prepared) prepared = co_await replication::ensure_publication(**connection, publication);
    for (const auto& table : tables) {
      if (!prepared) break;
      prepared = co_await replication::add_table_to_publication(**connection, publication, table);
    }
    if (prepared) break;
    spdlog::warn("database: {}; retrying in {} ms", prepared.error().to_string(), delay.count());
    retry.expires_after(delay);
    co_await retry.async_wait(asio::use_awaitable);
  }
  stream->start();
}

// Re-evaluates the monitor's time-based rules (grace period, stall) and
// tells the shapes whether to serve live or from direct queries. On the
// shapes strand.
void start_ticker(std::shared_ptr<asio::steady_timer> timer,
                  std::shared_ptr<status::ReplicationStatusMonitor> monitor,
                  std::shared_ptr<shapes::ShapeRegistry> registry,
                  std::shared_ptr<cluster::Announcer> announcer) {
  timer->expires_after(200ms);
  timer->async_wait([timer, monitor, registry, announcer](boost::system::error_code ec) {
    if (ec) return;
    monitor->tick();
    apply_serving_mode(*monitor, *registry);
    // Followers relay while the leader serves in fallback mode (rfc/0003).
    announcer->set_fallback(monitor->status() == status::ServingStatus::kFallback);
    start_ticker(timer, monitor, registry, announcer);
  });
}

std::string random_instance_id() {
  std::random_device random;
  std::uniform_int_distribution<std::uint32_t> hex(0, 0xffffff);
  char id[16];
  std::snprintf(id, sizeof id, "sp-%06x", hex(random));
  return id;
}

// The "cluster" part of /v1/status and /metrics, from the election.
status::ServingGauges cluster_gauges(const std::shared_ptr<Proxy::State>& state) {
  status::ServingGauges gauges;
  std::weak_ptr<cluster::Election> weak_election = state->election;
  std::weak_ptr<cluster::FollowerShapes> weak_follower = state->follower_shapes;
  gauges.cluster = [weak_election, weak_follower,
                    id = state->instance_id]() -> status::ClusterInfo {
    status::ClusterInfo info;
    info.instance_id = id;
    if (auto follower = weak_follower.lock()) {
      info.follower_serving = follower->serving();
      info.follower_reads = follower->served();
      info.follower_parked = follower->parked();
    }
    auto election = weak_election.lock();
    if (!election) return info;
    const auto view = election->view();
    info.role = cluster::to_string(view.role);
    if (view.leader) {
      info.leader_id = view.leader->instance_id;
      info.leader_since_ms = view.leader->since_ms;
    }
    return info;
  };
  return gauges;
}

// The shape API's settings, the same on a leader and a follower.
api::ShapeApiOptions shape_api_options(const config::Config& config) {
  api::ShapeApiOptions options;
  options.secret = config.secret;
  options.allow_delete = config.allow_delete;
  options.long_poll_timeout = config.long_poll_timeout;
  options.max_age_seconds = config.cache_max_age_seconds;
  options.stale_while_revalidate_seconds = config.cache_stale_age_seconds;
  return options;
}

// Replication starts once the core serves and the advisory lock is held.
void maybe_stream(const std::shared_ptr<Proxy::State>& state) {
  if (!state->core_started || !state->may_stream || state->streaming_started || state->stopping) {
    return;
  }
  state->streaming_started = true;
  asio::co_spawn(state->core,
                 prepare_and_stream(state->core, state->conninfo, state->config.publication_name,
                                    state->tables, state->stream),
                 asio::detached);
}

// Another instance leads (or this one could not start leading): stop at
// once, as if killed, so the data directory's lock (and the row store's) go
// with the process; a supervisor restarts it as a follower (rfc/0003).
[[noreturn]] void leave(const std::string& why) {
  spdlog::critical("cluster: {}; exiting (status 75) so that a restart rejoins as a follower", why);
  spdlog::default_logger()->flush();
  std::_Exit(75);
}

asio::awaitable<Result<void>> start_core(std::shared_ptr<Proxy::State> state);

cluster::ElectionEvents election_events(const std::shared_ptr<Proxy::State>& state) {
  std::weak_ptr<Proxy::State> weak = state;
  cluster::ElectionEvents events;
  events.promoted = [weak] {
    auto state = weak.lock();
    if (!state) return;
    asio::post(state->control, [state] {
      // Before the first round ends, start() starts the core itself.
      if (!state->initial_round_done || state->core_requested || state->stopping) return;
      state->core_requested = true;
      asio::co_spawn(state->control, start_core(state),
                     [](std::exception_ptr failure, Result<void> started) {
                       if (failure) leave("the promotion failed (internal error)");
                       if (!started) leave("the promotion failed: " + started.error().to_string());
                     });
    });
  };
  events.lock_taken = [weak] {
    auto state = weak.lock();
    if (!state) return;
    asio::post(state->control, [state] {
      state->may_stream = true;
      maybe_stream(state);
    });
  };
  events.deposed = [](const std::string& why) { leave("deposed: " + why); };
  return events;
}

// Every shape's durable end (cluster::Announcer::snapshot_json()), fetched
// by a follower when it starts listening to the leader.
constexpr const char* kClusterEndsPath = "/v1/cluster/ends";

http::Response no_leader_response(std::string_view message) {
  http::Response response = http::json_error(503, message);
  response.headers.emplace_back("retry-after", "1");
  return response;
}

// A request this instance does not serve itself (yet): relayed to the
// leader, or held while there is none (a promotion, a failover) until
// `deadline`, then 503 with retry-after. A request another instance
// forwarded is never forwarded again.
void serve_elsewhere(std::shared_ptr<Proxy::State> state, std::shared_ptr<http::Exchange> exchange,
                     http::Verb verb, std::string path,
                     std::chrono::steady_clock::time_point deadline) {
  if (auto local = state->served_locally()) {
    if (const auto* handler = local->find(verb, path)) return (*handler)(std::move(exchange));
  }
  if (exchange->request().header(cluster::kForwardedByHeader)) {
    return exchange->respond(no_leader_response("this instance does not lead (any more)"));
  }
  const auto view = state->election ? state->election->view() : cluster::ClusterView{};
  auto retry = [state, verb, path, deadline](std::shared_ptr<http::Exchange> exchange) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return exchange->respond(no_leader_response("no leader instance is available"));
    }
    auto timer = std::make_shared<asio::steady_timer>(state->io, 100ms);
    timer->async_wait([state, timer, exchange, verb, path, deadline](boost::system::error_code) {
      serve_elsewhere(state, exchange, verb, path, deadline);
    });
  };
  if (view.role == cluster::Role::kFollower && view.leader) {
    state->forwarder->forward(std::move(exchange), view.leader->url, retry);
  } else {
    retry(std::move(exchange));
  }
}

http::Handler elsewhere_handler(const std::shared_ptr<Proxy::State>& state, http::Verb verb,
                                std::string path) {
  std::weak_ptr<Proxy::State> weak = state;
  // A failover takes about the grace period plus the election's poll.
  const auto wait = std::chrono::milliseconds(state->config.fallback_grace) + 3s;
  return [weak, verb, path, wait](std::shared_ptr<http::Exchange> exchange) {
    auto state = weak.lock();
    if (!state) return exchange->respond(no_leader_response("shutting down"));
    serve_elsewhere(state, std::move(exchange), verb, path,
                    std::chrono::steady_clock::now() + wait);
  };
}

// GET /v1/shape: the leader's own API once this instance leads; on a
// follower its own reads of the shared files while it is in step with the
// leader (FollowerShapes), which relay what they cannot answer; otherwise
// (subsets, a request another instance forwarded, out of step) relayed.
http::Handler follower_get_handler(const std::shared_ptr<Proxy::State>& state, std::string path) {
  std::weak_ptr<Proxy::State> weak = state;
  auto relay = elsewhere_handler(state, http::Verb::get, path);
  return [weak, path, relay](std::shared_ptr<http::Exchange> exchange) {
    auto state = weak.lock();
    if (!state) return relay(std::move(exchange));
    if (auto local = state->served_locally()) {
      if (const auto* handler = local->find(http::Verb::get, path)) {
        return (*handler)(std::move(exchange));
      }
    }
    const auto& request = exchange->request();
    if (state->follower_shapes && state->follower_shapes->serving() &&
        !request.header(cluster::kForwardedByHeader) &&
        std::holds_alternative<std::monostate>(api::parse_subset_params(request))) {
      return state->follower_get(std::move(exchange));
    }
    relay(std::move(exchange));
  };
}

// The routes of every instance. A leader serves them from its core; a
// follower relays shape requests to the leader and answers /v1/status,
// /v1/health and /metrics itself, with its role.
http::Router front_routes(const std::shared_ptr<Proxy::State>& state) {
  http::Router router;
  const std::string shape_path = api::ShapeApiOptions{}.path;
  for (auto verb : {http::Verb::post, http::Verb::delete_}) {
    router.add(verb, shape_path, elsewhere_handler(state, verb, shape_path));
  }
  router.add(http::Verb::get, shape_path, follower_get_handler(state, shape_path));
  for (const char* path :
       {"/v1/status/history", "/v1/status/shapes", "/dashboard", kClusterEndsPath}) {
    router.add(http::Verb::get, path, elsewhere_handler(state, http::Verb::get, path));
  }
  std::weak_ptr<Proxy::State> weak = state;
  // A follower is "active" while it knows a leader to relay to; a leader
  // whose core is not serving yet is "starting".
  auto follower_health = http::health_handler([weak] {
    auto state = weak.lock();
    if (!state || !state->election) return http::HealthState::kStarting;
    const auto view = state->election->view();
    return view.role == cluster::Role::kFollower && view.leader ? http::HealthState::kActive
                                                                : http::HealthState::kStarting;
  });
  status::StatusEndpointOptions status_options;
  status_options.max_age_seconds = state->config.status_max_age_seconds;
  auto locally_or = [weak](const char* path, http::Handler otherwise) -> http::Handler {
    return [weak, path, otherwise](std::shared_ptr<http::Exchange> exchange) {
      auto state = weak.lock();
      if (state) {
        if (auto local = state->served_locally()) {
          if (const auto* handler = local->find(http::Verb::get, path)) {
            return (*handler)(std::move(exchange));
          }
        }
      }
      otherwise(std::move(exchange));
    };
  };
  router.add(http::Verb::get, "/v1/health", locally_or("/v1/health", follower_health));
  // A follower's status is its leader's (what it serves), with its own role.
  auto follower_status = [weak, status_options](std::shared_ptr<http::Exchange> exchange) {
    auto state = weak.lock();
    if (!state) return exchange->respond(no_leader_response("shutting down"));
    const auto gauges = cluster_gauges(state);
    auto own = [state, gauges, status_options](std::shared_ptr<http::Exchange> exchange) {
      exchange->respond(status::status_response(
          exchange->request(),
          status::status_body(state->follower_monitor->snapshot(), gauges).dump(), status_options));
    };
    const auto view = state->election ? state->election->view() : cluster::ClusterView{};
    if (!view.leader || view.role == cluster::Role::kLeader) return own(std::move(exchange));
    state->forwarder->fetch(
        view.leader->url, "/v1/status",
        [exchange, gauges, status_options, own](Result<http::Response> fetched) {
          if (fetched && fetched->status == 200) {
            auto body = nlohmann::json::parse(fetched->body_view(), nullptr, false);
            if (body.is_object()) {
              body["cluster"] = status::cluster_json(gauges.cluster_info());
              return exchange->respond(
                  status::status_response(exchange->request(), body.dump(), status_options));
            }
          }
          own(exchange);
        });
  };
  router.add(http::Verb::get, "/v1/status", locally_or("/v1/status", follower_status));
  auto follower_metrics = [weak](std::shared_ptr<http::Exchange> exchange) {
    auto state = weak.lock();
    if (!state) return exchange->respond(no_leader_response("shutting down"));
    status::metrics_handler(state->follower_monitor, cluster_gauges(state),
                            state->request_metrics)(std::move(exchange));
  };
  router.add(
      http::Verb::get, "/metrics",
      http::require_token(state->config.metrics_token, locally_or("/metrics", follower_metrics)));
  return router;
}

// The serving core of the leader: the shapes (loaded from the data
// directory: only the holder of its lock opens the row store), replication,
// the status monitor and probe, fallback queries and the shape API; then its
// routes are served locally. Replication starts once the advisory lock is
// held too (maybe_stream). On the control strand.
asio::awaitable<Result<void>> start_core(std::shared_ptr<Proxy::State> state) {
  const auto& config = state->config;

  // Replication and the shapes share one strand: transactions apply in order
  // with no locks.
  auto strand = asio::make_strand(state->io);
  auto pool = std::make_shared<pg::ConnectionPool>(strand, state->conninfo, 4);
  // Degraded mode: direct queries, to a standby when one is configured.
  auto fallback_strand = asio::make_strand(state->io);
  const std::string fallback_conninfo = config.fallback_database_url.value_or(state->conninfo);
  fallback::FallbackQueryOptions fallback_options;
  fallback_options.source = config.fallback_database_url ? "standby" : "primary";
  fallback_options.max_in_flight = config.fallback_max_queries;
  fallback_options.reuse_window = config.fallback_poll_interval;
  fallback_options.statement_timeout = config.fallback_statement_timeout;
  auto fallback_pool =
      fallback::FallbackQuery::make_pool(fallback_strand, fallback_conninfo, fallback_options);
  state->fallback =
      std::make_shared<fallback::FallbackQuery>(fallback_strand, fallback_pool, fallback_options);
  std::weak_ptr<fallback::FallbackQuery> weak_fallback = state->fallback;

  replication::ReplicationStreamOptions options;
  options.conninfo = state->conninfo;
  options.slot_name = config.slot_name;
  options.publication_name = config.publication_name;
  options.status_interval = config.replication_status_interval;
  // While replication is down, retry at least once per grace period, so the
  // status is back to live within about the grace period of replication
  // returning (not after a 30 s backoff sleep).
  options.max_backoff = std::clamp(std::chrono::milliseconds(config.fallback_grace),
                                   options.min_backoff, options.max_backoff);
  state->stream = std::make_shared<replication::ReplicationStream>(strand, options, state->ingest);
  // Wired at construction: the registry calls these on its strand.
  shapes::ShapeRegistryHooks registry_hooks;
  registry_hooks.fallback_rows = fallback::registry_source(weak_fallback);
  std::weak_ptr<replication::ReplicationStream> weak_stream = state->stream;
  registry_hooks.on_durable = [weak_stream](replication::Lsn end_lsn) {
    if (auto stream = weak_stream.lock()) stream->acknowledge(end_lsn);
  };
  // Followers learn of durable ends from the announcer (rfc/0003).
  state->announcer = std::make_shared<cluster::Announcer>(
      state->io, state->conninfo, cluster::Announcer::channel_for(config.slot_name),
      state->instance_id + "@" +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count()));
  std::weak_ptr<cluster::Announcer> weak_announcer = state->announcer;
  registry_hooks.durable_ends = [weak_announcer](replication::Lsn last_seen,
                                                 shapes::ShapeRegistryHooks::DurableEnds ends) {
    if (auto announcer = weak_announcer.lock()) announcer->durable(last_seen, std::move(ends));
  };
  registry_hooks.removed = [weak_announcer](const std::string& handle) {
    if (auto announcer = weak_announcer.lock()) announcer->removed(handle);
  };
  shapes::ShapeRegistryOptions registry_options;
  registry_options.publication_name = config.publication_name;
  registry_options.chunk_bytes = config.chunk_bytes;
  registry_options.live_timeout = config.long_poll_timeout;
  registry_options.shapes_dir = std::filesystem::absolute(config.data_dir / "shapes");
  registry_options.compact_bytes = config.compact_bytes;
  registry_options.state_store.cache_bytes = config.state_cache_bytes;
  registry_options.idle_timeout = config.shape_idle_timeout;
  registry_options.max_shapes = config.max_shapes;
  registry_options.fallback_poll_interval = config.fallback_poll_interval;
  registry_options.snapshot_timeout = config.snapshot_timeout;
  state->registry = std::make_shared<shapes::ShapeRegistry>(strand, pool, registry_options,
                                                            std::move(registry_hooks));
  state->core = strand;
  // Load saved shapes on the strand before anything else touches the registry.
  auto registry = state->registry;
  using Loaded = std::pair<std::size_t, std::optional<Error>>;  // co_spawn needs a default
  // Named, not a temporary in the co_await expression: g++ 12 destroys a
  // closure (or any aggregate) temporary there twice, and this one's copy of
  // the registry pointer was released one time too many, so the registry
  // was freed while frames still held it: use-after-free and heap
  // corruption at shutdown (issue 16, item 3).
  auto load = [registry, announcer = state->announcer]() -> asio::awaitable<Loaded> {
    auto count = registry->load();
    if (!count) co_return Loaded{0, count.error()};
    auto [last_seen, ends] = registry->durable_ends();
    announcer->seed(last_seen, std::move(ends));
    registry->start_housekeeping();
    co_return Loaded{count.value(), std::nullopt};
  };
  auto loaded = co_await asio::co_spawn(strand, std::move(load), asio::use_awaitable);
  if (loaded.second) co_return *loaded.second;
  spdlog::info("shapes: {} loaded from {}", loaded.first, registry_options.shapes_dir->string());
  state->announcer->start();
  // A follower promoted to leader stops serving from its views.
  if (state->follower_shapes) state->follower_shapes->stop();

  status::StatusMonitorOptions monitor_options;
  monitor_options.slot_name = config.slot_name;
  monitor_options.grace_period = config.fallback_grace;
  state->monitor = std::make_shared<status::ReplicationStatusMonitor>(monitor_options);
  state->ingest.attach(state->stream, state->registry, state->monitor);
  status::ReplicationProbeOptions probe_options;
  probe_options.conninfo = state->conninfo;
  probe_options.slot_name = config.slot_name;
  auto monitor = state->monitor;
  state->probe = std::make_shared<status::ReplicationProbe>(
      strand, probe_options,
      [monitor, registry = state->registry](const status::ProbeResult& probe) {
        monitor->on_health_probe(probe);
        apply_serving_mode(*monitor, *registry);
      });
  state->probe->start();
  state->monitor_ticker = std::make_shared<asio::steady_timer>(strand);
  start_ticker(state->monitor_ticker, state->monitor, state->registry, state->announcer);

  state->shape_api = std::make_unique<api::ShapeApi>(*state->registry, shape_api_options(config),
                                                     state->io.get_executor());
  // Subset snapshots: their own queries (never in a shape's log), to the
  // primary, or in fallback mode to the fallback source; capped like it.
  auto subset_strand = asio::make_strand(state->io);
  auto subset_primary =
      fallback::FallbackQuery::make_pool(subset_strand, state->conninfo, fallback_options);
  auto subset_fallback = config.fallback_database_url
                             ? fallback::FallbackQuery::make_pool(
                                   subset_strand, *config.fallback_database_url, fallback_options)
                             : nullptr;
  state->subsets = std::make_shared<shapes::SubsetQueries>(
      subset_strand, subset_primary, subset_fallback, fallback_options.max_in_flight);
  state->shape_api->set_subset_runner(
      [subsets = state->subsets](shapes::ShapeDefinitionRequest shape, shapes::SubsetRequest subset,
                                 bool fallback, std::function<void(shapes::SubsetOutcome)> done) {
        subsets->run(std::move(shape), std::move(subset), fallback, std::move(done));
      });

  auto router = std::make_shared<http::Router>();
  state->shape_api->register_routes(*router);
  status::ServingGauges gauges = cluster_gauges(state);
  gauges.fallback = [weak_fallback]() -> status::FallbackActivity {
    auto query = weak_fallback.lock();
    return query ? query->activity() : status::FallbackActivity{};
  };
  std::weak_ptr<shapes::ShapeRegistry> weak_registry = state->registry;
  gauges.shape_count = [weak_registry]() -> std::uint64_t {
    auto registry = weak_registry.lock();
    return registry ? registry->shapes_held() : 0;
  };
  gauges.parked_requests = [weak_registry]() -> std::uint64_t {
    auto registry = weak_registry.lock();
    return registry ? registry->parked_reads() : 0;
  };
  gauges.shapes_by_state = [weak_registry]() -> status::ShapesByState {
    auto registry = weak_registry.lock();
    if (!registry) return {};
    const std::uint64_t held = registry->shapes_held();
    const std::uint64_t snapshotting = std::min(registry->shapes_snapshotting(), held);
    return {snapshotting, held - snapshotting};
  };
  gauges.replication_reconnects = [weak_stream]() -> std::uint64_t {
    auto stream = weak_stream.lock();
    return stream ? stream->reconnects() : 0;
  };
  gauges.storage = [weak_registry]() -> status::StorageHealth {
    auto registry = weak_registry.lock();
    if (!registry) return {};
    auto state = registry->storage_state();
    return {state.failing, state.error, state.since, state.durable_lsn, state.holds_slot};
  };
  router->add(http::Verb::get, "/v1/health", status::health_handler(state->monitor));
  status::StatusEndpointOptions status_options;
  status_options.max_age_seconds = config.status_max_age_seconds;
  router->add(http::Verb::get, "/v1/status",
              status::status_handler(state->monitor, gauges, status_options));
  router->add(http::Verb::get, "/v1/status/history", status::history_handler(state->monitor));
  router->add(http::Verb::get, "/v1/status/shapes",
              status::shapes_handler([weak_registry](auto done) {
                auto registry = weak_registry.lock();
                if (!registry) return done({});
                registry->describe([done = std::move(done)](auto shapes) {
                  std::vector<status::ShapeRow> rows;
                  rows.reserve(shapes.size());
                  for (auto& s : shapes) {
                    rows.push_back({std::move(s.handle), std::move(s.table), std::move(s.where),
                                    s.ready ? "ready" : "snapshotting", s.rows, s.snapshot_bytes,
                                    s.readers});
                  }
                  done(std::move(rows));
                });
              }));
  router->add(http::Verb::get, "/dashboard", status::dashboard_handler());
  // Every shape's durable end, for a follower that starts listening.
  router->add(http::Verb::get, kClusterEndsPath,
              [announcer = state->announcer](std::shared_ptr<http::Exchange> exchange) {
                exchange->respond(http::Response::json(200, announcer->snapshot_json()));
              });
  router->add(http::Verb::get, "/metrics",
              status::metrics_handler(state->monitor, gauges, state->request_metrics));
  {
    std::lock_guard lock(state->routes_mutex);
    state->local_routes = std::move(router);
  }
  state->core_started = true;
  maybe_stream(state);
  co_return Result<void>{};
}

// A follower's own reads (rfc/0003): views of the shared shape files, kept
// in step by the leader's announcements; what they cannot answer is
// relayed as before. Once this instance leads, its core serves instead.
// Makes them; Proxy::start() starts them once the election exists.
void make_follower_serving(const std::shared_ptr<Proxy::State>& state) {
  const auto& config = state->config;
  std::weak_ptr<Proxy::State> weak = state;
  cluster::FollowerShapesOptions options;
  options.shapes_dir = std::filesystem::absolute(config.data_dir / "shapes");
  options.chunk_bytes = config.chunk_bytes;
  options.live_timeout = config.long_poll_timeout;
  options.conninfo = state->conninfo;
  options.channel = cluster::Announcer::channel_for(config.slot_name);
  auto fetch_ends = [weak](std::function<void(Result<std::string>)> done) {
    auto state = weak.lock();
    const auto view = state && state->election ? state->election->view() : cluster::ClusterView{};
    if (!state || view.role != cluster::Role::kFollower || !view.leader) {
      return done(Error{"unavailable", "no leader to ask", ""});
    }
    state->forwarder->fetch(
        view.leader->url, kClusterEndsPath, [done](Result<http::Response> fetched) {
          if (!fetched) return done(fetched.error());
          if (fetched->status != 200) {
            return done(
                Error{"unavailable", "the leader answered " + std::to_string(fetched->status), ""});
          }
          done(std::string(fetched->body_view()));
        });
  };
  state->follower_shapes =
      std::make_shared<cluster::FollowerShapes>(state->io, options, std::move(fetch_ends));
  api::ShapeApiOptions api_options = shape_api_options(config);
  // Reads its shapes cannot answer go to the leader, as every read did.
  const auto wait = std::chrono::milliseconds(config.fallback_grace) + 3s;
  api_options.elsewhere = [weak, path = api_options.path,
                           wait](std::shared_ptr<http::Exchange> exchange) {
    auto state = weak.lock();
    if (!state) return exchange->respond(no_leader_response("shutting down"));
    serve_elsewhere(state, std::move(exchange), http::Verb::get, path,
                    std::chrono::steady_clock::now() + wait);
  };
  state->follower_api = std::make_unique<api::ShapeApi>(*state->follower_shapes, api_options,
                                                        state->io.get_executor());
  state->follower_get = http::require_secret(
      config.secret,
      [api = state->follower_api.get()](auto exchange) { api->handle_get(std::move(exchange)); });
  // Started by Proxy::start() once state->election is set: fetch_ends reads
  // it from the follower's strand.
}

}  // namespace

asio::awaitable<Result<void>> Proxy::start(std::vector<replication::TableName> tables) {
  auto state = state_;
  const auto& config = state->config;
  spdlog::info("database: {}", pg::describe_conninfo(state->conninfo));
  state->tables = std::move(tables);
  state->instance_id = config.instance_id.value_or(random_instance_id());
  // Refuse a filesystem on which several instances would corrupt each other.
  if (auto checked = cluster::DataDirLock::check_filesystem(config.data_dir); !checked) {
    co_return checked.error();
  }
  state->follower_monitor =
      std::make_shared<status::ReplicationStatusMonitor>(status::StatusMonitorOptions{});
  cluster::ForwarderOptions forwarder_options;
  forwarder_options.instance_id = state->instance_id;
  forwarder_options.header_timeout =
      std::chrono::milliseconds(config.long_poll_timeout) + std::chrono::seconds(15);
  state->forwarder = std::make_unique<cluster::Forwarder>(state->io, forwarder_options);

  make_follower_serving(state);
  http::Router router = front_routes(state);
  auto metric_routes = router.paths();  // request metrics keep these apart
  state->request_metrics = std::make_shared<status::RequestMetrics>(std::move(metric_routes));

  // The first round of the election decides this instance's role before
  // start() returns: a leader has loaded its shapes by then, as a lone
  // proxy always did.
  cluster::ElectionOptions election_options;
  election_options.conninfo = state->conninfo;
  election_options.lock_name = config.slot_name;
  election_options.data_dir = config.data_dir;
  election_options.instance_id = state->instance_id;
  election_options.advertise_url = config.advertise_url;
  std::weak_ptr<State> weak_state = state;
  state->bound_port = config.port;
  election_options.port = [weak_state]() -> std::uint16_t {
    auto state = weak_state.lock();
    return state ? state->bound_port.load() : 0;
  };
  auto election_strand = asio::make_strand(state->io);
  state->election = std::make_shared<cluster::Election>(election_strand, election_options,
                                                        election_events(state));
  state->follower_shapes->start();
  co_await asio::co_spawn(election_strand, state->election->round(), asio::use_awaitable);
  state->initial_round_done = true;
  if (state->election->view().role == cluster::Role::kLeader && !state->core_requested) {
    state->core_requested = true;
    auto core = co_await start_core(state);
    if (!core) co_return core.error();
  }
  // Listening only now, as a lone proxy always did: a leader answers with
  // its shapes loaded. The record is written again with the port bound.
  http::ServerOptions server_options;
  server_options.on_request_done =
      logging::combine_observers(status::request_metrics_observer(state->request_metrics),
                                 config.access_log ? logging::access_log_observer() : nullptr);
  server_options.address = config.listen_address;
  server_options.port = config.port;
  server_options.max_connections = config.max_connections;
  state->server = std::make_unique<http::HttpServer>(state->io, server_options, std::move(router));
  if (auto started = state->server->start(); !started) co_return started.error();
  state->bound_port = state->server->port();
  asio::post(election_strand, [election = state->election] { election->republish(); });
  const auto view = state->election->view();
  spdlog::info(
      "cluster: instance {} starts as {}{}", state->instance_id, cluster::to_string(view.role),
      view.role == cluster::Role::kFollower && view.leader ? " of " + view.leader->instance_id
                                                           : std::string());
  state->election->start();
  co_return Result<void>{};
}

void Proxy::shutdown(std::function<void()> done) {
  auto state = state_;
  // `done` runs when both the HTTP server and the stream have stopped, and
  // then the shapes' worker threads (a compaction gives up; its posts land
  // on a live io_context): in this order, before the io_context goes.
  auto remaining = std::make_shared<std::atomic<int>>(2);
  auto finish_one = [state, remaining, done = std::move(done)] {
    if (--*remaining != 0) return;
    if (!state->registry) {
      done();
      return;
    }
    asio::post(state->core, [state, done] {
      state->registry->stop();
      done();
    });
  };
  asio::post(state->control, [state, finish_one] {
    state->stopping = true;
    if (state->follower_shapes) state->follower_shapes->stop();
    if (state->announcer) state->announcer->stop();
    if (auto election = state->election) {
      asio::post(election->executor(), [election] { election->stop(); });
    }
    if (state->probe) {
      asio::post(state->core, [state] {
        state->probe->stop();
        if (state->monitor_ticker) state->monitor_ticker->cancel();
      });
    }
    if (state->stream && state->stream->state() != replication::StreamState::kStopped) {
      state->ingest.when_stopped(finish_one);
      state->stream->stop();
    } else {
      finish_one();
    }
    if (state->server) {
      state->server->shutdown(finish_one);
    } else {
      finish_one();
    }
  });
}

std::uint16_t Proxy::http_port() const { return state_->server ? state_->server->port() : 0; }

std::vector<std::weak_ptr<const void>> Proxy::lifetimes() const {
  std::vector<std::weak_ptr<const void>> out{state_,           state_->registry, state_->stream,
                                             state_->fallback, state_->subsets,  state_->monitor};
  if (state_->server) out.push_back(state_->server->lifetime());
  return out;
}

}  // namespace shapeproxy::app
