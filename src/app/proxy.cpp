#include "app/proxy.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <utility>

#include <boost/asio/strand.hpp>

#include "api/shape_api.h"
#include "http/handlers.h"
#include "http/server.h"
#include "pg/async_connection.h"
#include "pg/connection_pool.h"
#include "pg/conninfo.h"
#include "replication/replication_stream.h"
#include "shapes/shape_registry.h"

namespace shapeproxy::app {
namespace asio = boost::asio;

namespace {

// Feeds replicated transactions to the shapes, then acknowledges them.
// Runs on the shapes strand (the stream shares it with the registry).
class Ingest : public replication::ReplicationListener {
 public:
  void attach(std::shared_ptr<replication::ReplicationStream> stream,
              std::shared_ptr<shapes::ShapeRegistry> registry) {
    stream_ = stream;
    registry_ = std::move(registry);
  }

  void on_transaction(replication::Transaction transaction) override {
    if (registry_) registry_->apply_transaction(transaction);
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
    spdlog::info(
        "replication: transaction {} committed at {}: {} insert(s), {} update(s), "
        "{} delete(s), {} truncate(s)",
        transaction.xid, pg::format_lsn(transaction.commit_lsn), inserts, updates, deletes,
        truncates);
    if (auto stream = stream_.lock()) stream->acknowledge(transaction.end_lsn);
  }

  void on_state(replication::StreamState state, const Error* cause) override {
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
};

Proxy::Proxy(asio::io_context& io, config::Config config, std::string database_conninfo)
    : state_(std::make_shared<State>(io, std::move(config), std::move(database_conninfo))) {}

Proxy::~Proxy() = default;

asio::any_io_executor Proxy::executor() const { return state_->control; }

asio::awaitable<Result<void>> Proxy::start(std::vector<replication::TableName> tables) {
  auto state = state_;
  const auto& config = state->config;
  spdlog::info("database: {}", pg::describe_conninfo(state->conninfo));
  auto connection = co_await pg::AsyncConnection::connect(state->control, state->conninfo);
  if (!connection) co_return connection.error();
  auto publication =
      co_await replication::ensure_publication(**connection, config.publication_name);
  if (!publication) co_return publication.error();
  for (const auto& table : tables) {
    auto added = co_await replication::add_table_to_publication(**connection,
                                                                config.publication_name, table);
    if (!added) co_return added.error();
  }

  replication::ReplicationStreamOptions options;
  options.conninfo = state->conninfo;
  options.slot_name = config.slot_name;
  options.publication_name = config.publication_name;
  options.status_interval = config.replication_status_interval;
  // Replication and the shapes share one strand: transactions apply in order
  // with no locks.
  auto strand = asio::make_strand(state->io);
  auto pool = std::make_shared<pg::ConnectionPool>(strand, state->conninfo, 4);
  shapes::ShapeRegistryOptions registry_options;
  registry_options.publication_name = config.publication_name;
  registry_options.chunk_bytes = config.chunk_bytes;
  registry_options.live_timeout = config.long_poll_timeout;
  state->registry = std::make_shared<shapes::ShapeRegistry>(strand, pool, registry_options);
  state->stream = std::make_shared<replication::ReplicationStream>(strand, options, state->ingest);
  state->ingest.attach(state->stream, state->registry);
  state->stream->start();

  api::ShapeApiOptions api_options;
  api_options.secret = config.secret;
  api_options.allow_delete = config.allow_delete;
  api_options.long_poll_timeout = config.long_poll_timeout;
  state->shape_api = std::make_unique<api::ShapeApi>(*state->registry, api_options);

  http::Router router;
  state->shape_api->register_routes(router);
  auto* log = &state->ingest;
  router.add(http::Verb::get, "/v1/health", http::health_handler([state, log] {
               return log->streaming() ? http::HealthState::kActive : http::HealthState::kStarting;
             }));
  http::ServerOptions server_options;
  server_options.address = config.listen_address;
  server_options.port = config.port;
  state->server = std::make_unique<http::HttpServer>(state->io, server_options, std::move(router));
  if (auto started = state->server->start(); !started) co_return started.error();
  co_return Result<void>{};
}

void Proxy::shutdown(std::function<void()> done) {
  auto state = state_;
  // `done` runs when both the HTTP server and the stream have stopped.
  auto remaining = std::make_shared<int>(2);
  auto finish_one = [remaining, done = std::move(done)] {
    if (--*remaining == 0) done();
  };
  asio::post(state->control, [state, finish_one] {
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
