#include "cluster/forwarder.h"
#include "common/no_throw.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <mutex>
#include <string_view>
#include <vector>

namespace shapeproxy::cluster {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint64_t kBodyLimit = 1ull << 30;

bool hop_by_hop(std::string_view name) {
  for (const char* h : {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-authorization", "proxy-authenticate", "host", "content-length"}) {
    if (http::iequals(name, h)) return true;
  }
  return false;
}

struct Authority {
  std::string host;
  std::string port;
  std::string text;  // host:port, the Host header and the pool's key
};

std::optional<Authority> parse_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return std::nullopt;
  std::string rest = url.substr(scheme.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  Authority a;
  a.text = rest;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos) return std::nullopt;
    a.host = rest.substr(1, close - 1);
    a.port = close + 1 < rest.size() && rest[close + 1] == ':' ? rest.substr(close + 2) : "80";
  } else {
    auto colon = rest.rfind(':');
    a.host = rest.substr(0, colon);
    a.port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  }
  if (a.host.empty() || a.port.empty()) return std::nullopt;
  return a;
}

http::Response unavailable(std::string_view message) {
  http::Response response = http::json_error(503, message);
  response.headers.emplace_back("retry-after", "1");
  return response;
}

}  // namespace

struct Forwarder::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, ForwarderOptions options) : io(io), options(std::move(options)) {}

  asio::io_context& io;
  const ForwarderOptions options;
  std::mutex mutex;
  std::map<std::string, std::vector<std::unique_ptr<beast::tcp_stream>>> idle;  // by authority

  std::unique_ptr<beast::tcp_stream> take_idle(const std::string& authority) {
    std::lock_guard lock(mutex);
    auto& list = idle[authority];
    if (list.empty()) return nullptr;
    auto stream = std::move(list.back());
    list.pop_back();
    return stream;
  }

  void give_back(const std::string& authority, std::unique_ptr<beast::tcp_stream> stream) {
    std::lock_guard lock(mutex);
    auto& list = idle[authority];
    if (list.size() < options.max_idle_connections) list.push_back(std::move(stream));
  }

  asio::awaitable<std::unique_ptr<beast::tcp_stream>> connect(const Authority& authority) {
    tcp::resolver resolver(io);
    auto [rec, endpoints] =
        co_await resolver.async_resolve(authority.host, authority.port, kNoThrow);
    if (rec) co_return nullptr;
    auto stream = std::make_unique<beast::tcp_stream>(io.get_executor());
    stream->expires_after(options.connect_timeout);
    auto [cec, endpoint] = co_await stream->async_connect(endpoints, kNoThrow);
    if (cec) co_return nullptr;
    (void)endpoint;
    stream->socket().set_option(tcp::no_delay(true));
    co_return stream;
  }

  bhttp::request<bhttp::string_body> upstream_request(const http::Request& request,
                                                      const Authority& authority) const {
    bhttp::request<bhttp::string_body> out{request.method(), request.target(), 11};
    for (const auto& [name, value] : request.headers()) {
      if (!hop_by_hop(name) && !http::iequals(name, kForwardedByHeader)) out.insert(name, value);
    }
    out.set(bhttp::field::host, authority.text);
    out.set(kForwardedByHeader, options.instance_id);
    out.keep_alive(true);
    out.body() = request.body();
    out.prepare_payload();
    return out;
  }

  static http::Params response_headers(const bhttp::fields& fields, bool drop_content_type) {
    http::Params headers;
    for (const auto& field : fields) {
      std::string_view name(field.name_string().data(), field.name_string().size());
      if (hop_by_hop(name)) continue;
      if (drop_content_type && http::iequals(name, "content-type")) continue;
      headers.emplace_back(std::string(name),
                           std::string(field.value().data(), field.value().size()));
    }
    return headers;
  }

  // Relays an event stream frame by frame (whole frames, as the leader
  // framed them), until the leader ends it or the client goes.
  asio::awaitable<void> relay_events(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                     bhttp::response_parser<bhttp::empty_body>& header,
                                     std::shared_ptr<http::Exchange> exchange) {
    bhttp::response_parser<bhttp::buffer_body> parser(std::move(header));
    exchange->start_event_stream(response_headers(parser.get().base(), true));
    std::string pending;
    char chunk[16 * 1024];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      stream.expires_after(options.read_timeout);
      auto [ec, n] = co_await bhttp::async_read_some(stream, buffer, parser, kNoThrow);
      (void)n;
      if (ec && ec != bhttp::error::need_buffer) break;
      pending.append(chunk, sizeof chunk - parser.get().body().size);
      // Whole frames go out as they are; a partial one waits for its end.
      if (auto last = pending.rfind("\n\n"); last != std::string::npos) {
        exchange->send_frames(std::make_shared<const std::string>(pending.substr(0, last + 2)));
        pending.erase(0, last + 2);
      }
    }
    exchange->end_event_stream();
  }

  // The stream an exchange's abort closes, while an attempt owns it.
  struct AbortTarget {
    std::mutex mutex;
    beast::tcp_stream* stream = nullptr;
    // Clears the target when the attempt lets go of the stream.
    struct Detach {
      std::shared_ptr<AbortTarget> target;
      void now() {
        std::lock_guard lock(target->mutex);
        target->stream = nullptr;
      }
      ~Detach() { now(); }
    };
  };

  // One attempt. Returns false when nothing reached the leader (retry on a
  // fresh connection, or report it unreachable).
  asio::awaitable<bool> attempt(std::unique_ptr<beast::tcp_stream> stream,
                                const Authority& authority,
                                std::shared_ptr<http::Exchange> exchange) {
    auto request = upstream_request(exchange->request(), authority);
    stream->expires_after(options.read_timeout);
    auto [wec, written] = co_await bhttp::async_write(*stream, request, kNoThrow);
    (void)written;
    if (wec) co_return false;
    // The client going away closes the relay, while this attempt still owns
    // the stream: the abort may come after the stream was freed or given
    // back for another request (a heap-use-after-free under ASan).
    auto target = std::make_shared<AbortTarget>();
    target->stream = stream.get();
    AbortTarget::Detach detach{target};
    exchange->on_abort([target, executor = stream->get_executor()] {
      asio::post(executor, [target] {
        std::lock_guard lock(target->mutex);
        if (target->stream) target->stream->socket().close();
      });
    });
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::empty_body> header;
    header.body_limit(kBodyLimit);
    stream->expires_after(options.header_timeout);
    auto [hec, header_bytes] = co_await bhttp::async_read_header(*stream, buffer, header, kNoThrow);
    (void)header_bytes;
    if (hec) {
      if (header_bytes == 0 && buffer.size() == 0 && !exchange->responded()) co_return false;
      exchange->respond(unavailable("the leader instance did not answer"));
      co_return true;
    }
    const auto content_type = header.get()[bhttp::field::content_type];
    if (content_type.starts_with("text/event-stream")) {
      co_await relay_events(*stream, buffer, header, exchange);
      co_return true;  // the stream is not reused
    }
    bhttp::response_parser<bhttp::string_body> parser(std::move(header));
    parser.body_limit(kBodyLimit);
    stream->expires_after(options.read_timeout);
    auto [rec, read] = co_await bhttp::async_read(*stream, buffer, parser, kNoThrow);
    (void)read;
    if (rec) {
      exchange->respond(unavailable("the leader instance did not answer"));
      co_return true;
    }
    auto message = parser.release();
    http::Response response;
    response.status = message.result_int();
    response.headers = response_headers(message.base(), false);
    response.body = std::make_shared<const std::string>(std::move(message.body()));
    const bool reusable = message.keep_alive() && buffer.size() == 0;
    exchange->respond(std::move(response));
    if (reusable && stream->socket().is_open()) {
      stream->expires_never();
      detach.now();
      give_back(authority.text, std::move(stream));
    }
    co_return true;
  }

  asio::awaitable<void> relay(std::shared_ptr<http::Exchange> exchange, std::string url,
                              std::function<void(std::shared_ptr<http::Exchange>)> unreachable) {
    auto authority = parse_url(url);
    if (authority) {
      // A kept-alive connection may have been closed by the leader meanwhile:
      // then once more on a fresh one.
      if (auto idle_stream = take_idle(authority->text)) {
        const bool done = co_await attempt(std::move(idle_stream), *authority, exchange);
        if (done) co_return;
      }
      auto fresh = co_await connect(*authority);
      if (fresh) {
        const bool done = co_await attempt(std::move(fresh), *authority, exchange);
        if (done) co_return;
      }
    }
    if (!exchange->responded()) unreachable(std::move(exchange));
  }
};

namespace {

// An exchange that hands the response to a callback (fetch()).
class CapturingExchange : public http::Exchange {
 public:
  CapturingExchange(http::Request request, std::function<void(Result<http::Response>)> done)
      : request_(std::move(request)), done_(std::move(done)) {}
  const http::Request& request() const override { return request_; }
  void respond(http::Response response) override {
    if (auto done = std::exchange(done_, {})) done(std::move(response));
  }
  bool responded() const override { return !done_; }
  void start_event_stream(http::Params) override {
    if (auto done = std::exchange(done_, {}))
      done(Error{"cluster.forward", "unexpected event stream", ""});
  }
  void send_event(std::string) override {}
  void send_comment(std::string) override {}
  void send_frames(std::shared_ptr<const std::string>) override {}
  void end_event_stream() override {}
  void abort() override { fail(Error{"cluster.forward", "the response was cut", ""}); }
  void on_abort(std::function<void()>) override {}
  void on_shutdown(std::function<void()>) override {}
  void fail(Error error) {
    if (auto done = std::exchange(done_, {})) done(std::move(error));
  }

 private:
  http::Request request_;
  std::function<void(Result<http::Response>)> done_;
};

}  // namespace

Forwarder::Forwarder(asio::io_context& io, ForwarderOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(options))) {}

Forwarder::~Forwarder() = default;

void Forwarder::forward(std::shared_ptr<http::Exchange> exchange, std::string url,
                        std::function<void(std::shared_ptr<http::Exchange>)> unreachable) {
  auto impl = impl_;
  asio::co_spawn(asio::make_strand(impl->io),
                 impl->relay(std::move(exchange), std::move(url), std::move(unreachable)),
                 asio::detached);
}

void Forwarder::fetch(std::string url, std::string target,
                      std::function<void(Result<http::Response>)> done) {
  auto exchange = std::make_shared<CapturingExchange>(
      http::Request(http::Verb::get, std::move(target), {}), std::move(done));
  forward(exchange, std::move(url), [exchange](std::shared_ptr<http::Exchange>) {
    exchange->fail(Error{"cluster.leader_unreachable", "the leader instance is unreachable", ""});
  });
}

}  // namespace shapeproxy::cluster
