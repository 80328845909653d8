// One keep-alive HTTP/1.1 connection used by a coroutine to send GET
// requests to whichever endpoint it is told, reconnecting as needed. Every
// step has a deadline. cancel() aborts the request in flight (used by stop()
// and to cut a long-poll short); all calls must be made on the connection's
// executor.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "endpoint.h"

namespace shapeproxy::client::detail {

struct HttpResponse {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::optional<std::string> header(std::string_view name) const;
};

struct HttpOutcome {
  bool ok = false;
  bool cancelled = false;  // cancel() was called while it ran
  std::string error;       // when !ok
  HttpResponse response;   // when ok
};

struct RequestTimeouts {
  std::chrono::milliseconds connect;
  std::chrono::milliseconds total;  // writing the request and reading the whole response
};

class HttpConnection {
 public:
  explicit HttpConnection(boost::asio::any_io_executor executor);

  boost::asio::awaitable<HttpOutcome> get(
      const Endpoint& endpoint, const std::string& target,
      const std::vector<std::pair<std::string, std::string>>& headers, RequestTimeouts timeouts);
  void cancel();
  void close();

 private:
  boost::asio::awaitable<HttpOutcome> attempt(
      const Endpoint& endpoint, const std::string& target,
      const std::vector<std::pair<std::string, std::string>>& headers, RequestTimeouts timeouts,
      bool* reused);

  boost::asio::any_io_executor executor_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::string connected_to_;  // endpoint url of the open connection, "" if none
  bool cancelled_ = false;
};

}  // namespace shapeproxy::client::detail
