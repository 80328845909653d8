// Proxy: composes one running shapeproxy from a Config and a database
// connection string: publication set-up, the replication stream, and the
// HTTP server with its routes. main() owns the process concerns (flags,
// signals, the embedded cluster); Proxy owns the serving.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "replication/publication.h"

namespace shapeproxy::app {

class Proxy {
 public:
  Proxy(boost::asio::io_context& io, config::Config config, std::string database_conninfo);
  ~Proxy();

  // The strand start() must be spawned on; shutdown() runs there too.
  boost::asio::any_io_executor executor() const;

  // Creates the publication (publishing `tables`), then starts replication
  // and the HTTP server. An Error says what to fix.
  boost::asio::awaitable<Result<void>> start(std::vector<replication::TableName> tables);
  // Stops accepting, answers parked requests, stops replication; `done` runs
  // on the io_context when everything has stopped.
  void shutdown(std::function<void()> done);

  std::uint16_t http_port() const;

  // Tests: weak references to the long-lived parts (serving state, shapes
  // registry, replication stream, fallback and subset queries, HTTP server
  // state). Each expires once the proxy and its io_context are gone; one
  // that does not is held by a reference cycle (a leak).
  std::vector<std::weak_ptr<const void>> lifetimes() const;

  struct State;  // opaque: the composition in proxy.cpp

 private:
  std::shared_ptr<State> state_;
};

}  // namespace shapeproxy::app
