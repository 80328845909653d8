#include "app/proxy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>

#include "api/shape_api.h"
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
                  std::shared_ptr<shapes::ShapeRegistry> registry) {
  timer->expires_after(200ms);
  timer->async_wait([timer, monitor, registry](boost::system::error_code ec) {
    if (ec) return;
    monitor->tick();
    apply_serving_mode(*monitor, *registry);
    start_ticker(timer, monitor, registry);
  });
}

}  // namespace

asio::awaitable<Result<void>> Proxy::start(std::vector<replication::TableName> tables) {
  auto state = state_;
  const auto& config = state->config;
  spdlog::info("database: {}", pg::describe_conninfo(state->conninfo));

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
  auto loaded = co_await asio::co_spawn(
      strand,
      [registry]() -> asio::awaitable<Loaded> {
        auto count = registry->load();
        if (!count) co_return Loaded{0, count.error()};
        registry->start_housekeeping();
        co_return Loaded{count.value(), std::nullopt};
      },
      asio::use_awaitable);
  if (loaded.second) co_return *loaded.second;
  spdlog::info("shapes: {} loaded from {}", loaded.first, registry_options.shapes_dir->string());

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
  start_ticker(state->monitor_ticker, state->monitor, state->registry);

  api::ShapeApiOptions api_options;
  api_options.secret = config.secret;
  api_options.allow_delete = config.allow_delete;
  api_options.long_poll_timeout = config.long_poll_timeout;
  api_options.max_age_seconds = config.cache_max_age_seconds;
  api_options.stale_while_revalidate_seconds = config.cache_stale_age_seconds;
  state->shape_api = std::make_unique<api::ShapeApi>(*state->registry, api_options);
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

  http::Router router;
  state->shape_api->register_routes(router);
  status::ServingGauges gauges;
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
    return {state.failing, state.error, state.since, state.durable_lsn};
  };
  router.add(http::Verb::get, "/v1/health", status::health_handler(state->monitor));
  status::StatusEndpointOptions status_options;
  status_options.max_age_seconds = config.status_max_age_seconds;
  router.add(http::Verb::get, "/v1/status",
             status::status_handler(state->monitor, gauges, status_options));
  router.add(http::Verb::get, "/v1/status/history", status::history_handler(state->monitor));
  router.add(http::Verb::get, "/v1/status/shapes",
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
  router.add(http::Verb::get, "/dashboard", status::dashboard_handler());
  auto metric_routes = router.paths();  // request metrics keep these apart
  metric_routes.emplace_back("/metrics");
  state->request_metrics = std::make_shared<status::RequestMetrics>(std::move(metric_routes));
  router.add(
      http::Verb::get, "/metrics",
      http::require_token(config.metrics_token,
                          status::metrics_handler(state->monitor, gauges, state->request_metrics)));
  http::ServerOptions server_options;
  server_options.on_request_done =
      logging::combine_observers(status::request_metrics_observer(state->request_metrics),
                                 config.access_log ? logging::access_log_observer() : nullptr);
  server_options.address = config.listen_address;
  server_options.port = config.port;
  server_options.max_connections = config.max_connections;
  state->server = std::make_unique<http::HttpServer>(state->io, server_options, std::move(router));
  if (auto started = state->server->start(); !started) co_return started.error();

  asio::co_spawn(strand,
                 prepare_and_stream(strand, state->conninfo, config.publication_name,
                                    std::move(tables), state->stream),
                 asio::detached);
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

}  // namespace shapeproxy::app
