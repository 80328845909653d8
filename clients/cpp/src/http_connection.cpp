#include "http_connection.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

namespace shapeproxy::client::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr std::uint64_t kBodyLimit = 1ull << 30;

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  std::string wanted = lower(name);
  for (const auto& [key, value] : headers)
    if (key == wanted) return value;
  return std::nullopt;
}

HttpConnection::HttpConnection(asio::any_io_executor executor)
    : executor_(executor), stream_(executor) {}

void HttpConnection::cancel() {
  cancelled_ = true;
  close();
}

void HttpConnection::close() {
  beast::error_code ec;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  stream_.close();
  buffer_.clear();
  connected_to_.clear();
}

asio::awaitable<HttpOutcome> HttpConnection::get(
    const Endpoint& endpoint, const std::string& target,
    const std::vector<std::pair<std::string, std::string>>& headers, RequestTimeouts timeouts) {
  cancelled_ = false;
  bool reused = false;
  HttpOutcome outcome = co_await attempt(endpoint, target, headers, timeouts, &reused);
  // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
  if (!outcome.ok && reused && !cancelled_) {
    outcome = co_await attempt(endpoint, target, headers, timeouts, &reused);
  }
  outcome.cancelled = cancelled_;
  co_return outcome;
}

asio::awaitable<HttpOutcome> HttpConnection::attempt(
    const Endpoint& endpoint, const std::string& target,
    const std::vector<std::pair<std::string, std::string>>& headers, RequestTimeouts timeouts,
    bool* reused) {
  HttpOutcome outcome;
  beast::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  *reused = connected_to_ == endpoint.url && stream_.socket().is_open();
  if (!*reused) {
    close();
    asio::ip::tcp::resolver resolver(executor_);
    auto results = co_await resolver.async_resolve(endpoint.host, endpoint.port, token);
    if (ec || cancelled_) {
      outcome.error = "resolve " + endpoint.host + ": " + ec.message();
      co_return outcome;
    }
    stream_.expires_after(timeouts.connect);
    co_await stream_.async_connect(results, token);
    if (ec || cancelled_) {
      outcome.error = "connect " + endpoint.url + ": " + ec.message();
      close();
      co_return outcome;
    }
    stream_.socket().set_option(asio::ip::tcp::no_delay(true), ec);
    connected_to_ = endpoint.url;
  }

  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, endpoint.host + ":" + endpoint.port);
  request.set(http::field::accept, "application/json");
  request.keep_alive(true);
  for (const auto& [name, value] : headers) request.set(name, value);

  stream_.expires_after(timeouts.total);
  co_await http::async_write(stream_, request, token);
  if (ec || cancelled_) {
    outcome.error = "send to " + endpoint.url + ": " + ec.message();
    close();
    co_return outcome;
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  co_await http::async_read(stream_, buffer_, parser, token);
  if (ec || cancelled_) {
    outcome.error = ec == beast::error::timeout ? "timed out waiting for " + endpoint.url
                                                : "read from " + endpoint.url + ": " + ec.message();
    close();
    co_return outcome;
  }
  *reused = false;  // a response arrived: no retry whatever it says
  auto& response = parser.get();
  outcome.ok = true;
  outcome.response.status = response.result_int();
  for (const auto& field : response)
    outcome.response.headers.emplace_back(lower(field.name_string()), std::string(field.value()));
  outcome.response.body = std::move(response.body());
  if (!response.keep_alive()) close();
  stream_.expires_never();
  co_return outcome;
}

}  // namespace shapeproxy::client::detail
