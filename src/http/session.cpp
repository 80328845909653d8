#include "http/session.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/write.hpp>

namespace shapeproxy::http::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = net::ip::tcp;

namespace {

constexpr size_t kFirstReadBytes = 4096;
constexpr size_t kReadBytes = 16384;  // later reads of a request (body)
constexpr std::chrono::milliseconds kMaxLinger{2000};

bool is_http_parse_error(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category();
}

// "data: <line>\n" per line of `data`, then a blank line.
std::string sse_data_frame(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  while (true) {
    size_t nl = data.find('\n');
    out += "data: ";
    out += data.substr(0, nl);
    out += '\n';
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
  }
  out += '\n';
  return out;
}

// Callbacks run on the strand; an exception must not unwind the io_context.
void run_callbacks(std::vector<std::function<void()>>& callbacks, const char* what) {
  for (auto& cb : callbacks) {
    try {
      cb();
    } catch (const std::exception& e) {
      spdlog::error("http: {} callback threw: {}", what, e.what());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// ExchangeImpl

ExchangeImpl::ExchangeImpl(Request request, std::weak_ptr<Session> session,
                           net::any_io_executor strand)
    : request_(std::move(request)), session_(std::move(session)), strand_(std::move(strand)) {}

template <class F>
void ExchangeImpl::post_to_session(F f) {
  net::post(strand_, [self = shared_from_this(), f = std::move(f)]() mutable {
    if (auto session = self->session_.lock()) f(*session, self);
  });
}

void ExchangeImpl::respond(Response response) {
  if (responded_.exchange(true)) return;
  post_to_session([r = std::move(response)](Session& s, const auto& self) mutable {
    s.deliver(self, std::move(r));
  });
}

void ExchangeImpl::start_event_stream(Params headers) {
  if (responded_.exchange(true)) return;
  post_to_session([h = std::move(headers)](Session& s, const auto& self) mutable {
    s.stream_start(self, std::move(h));
  });
}

void ExchangeImpl::send_event(std::string data) {
  send_frames(std::make_shared<const std::string>(sse_data_frame(data)));
}

void ExchangeImpl::send_comment(std::string text) {
  send_frames(std::make_shared<const std::string>(": " + text + "\n\n"));
}

void ExchangeImpl::send_frames(std::shared_ptr<const std::string> frames) {
  if (!frames || frames->empty()) return;
  post_to_session([frames = std::move(frames)](Session& s, const auto& self) mutable {
    s.stream_frame(self, std::move(frames));
  });
}

void ExchangeImpl::end_event_stream() {
  post_to_session([](Session& s, const auto& self) { s.stream_end(self); });
}

void ExchangeImpl::abort() {
  post_to_session([](Session& s, const auto& self) { s.stream_abort(self); });
}

void ExchangeImpl::on_abort(std::function<void()> callback) {
  {
    std::lock_guard lock(mu_);
    if (finished_) return;
    if (!aborted_) {
      abort_callbacks_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

void ExchangeImpl::on_shutdown(std::function<void()> callback) {
  std::lock_guard lock(mu_);
  if (!finished_ && !aborted_) shutdown_callbacks_.push_back(std::move(callback));
}

void ExchangeImpl::fire_abort() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu_);
    if (aborted_ || finished_) return;
    aborted_ = true;
    callbacks.swap(abort_callbacks_);
    shutdown_callbacks_.clear();
  }
  responded_ = true;
  run_callbacks(callbacks, "abort");
}

bool ExchangeImpl::fire_shutdown() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu_);
    callbacks.swap(shutdown_callbacks_);
  }
  run_callbacks(callbacks, "shutdown");
  return !callbacks.empty();
}

void ExchangeImpl::finish() {
  std::vector<std::function<void()>> abort_callbacks, shutdown_callbacks;
  {
    std::lock_guard lock(mu_);
    finished_ = true;  // later on_abort()/on_shutdown() are dropped
    abort_callbacks.swap(abort_callbacks_);
    shutdown_callbacks.swap(shutdown_callbacks_);
  }
}

// ---------------------------------------------------------------------------
// Session: lifecycle

Session::Session(tcp::socket&& socket, std::shared_ptr<ServerState> server, uint64_t id)
    : server_(std::move(server)), opts_(server_->options), id_(id), stream_(std::move(socket)) {}

Session::~Session() {
  // An exchange still parked here will never be answered on this connection:
  // its handler must learn it (an SSE session would otherwise run on).
  if (exchange_) exchange_->fire_abort();
  if (id_ != 0) server_->unregister(id_);
}

void Session::run() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->wait_for_request(); });
}

void Session::run_rejected() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
    self->begin_record({}, Verb::unknown);
    Response r = json_error(503, "Too many open connections");
    r.headers.emplace_back("retry-after", std::to_string(self->opts_.retry_after_seconds));
    self->write_response(std::move(r), /*close=*/true);
  });
}

void Session::begin_shutdown() {
  net::post(stream_.get_executor(), [self = shared_from_this()] { self->do_shutdown(); });
}

void Session::force_close() {
  net::post(stream_.get_executor(), [self = shared_from_this()] { self->close_now(); });
}

void Session::do_shutdown() {
  closing_ = true;
  switch (state_) {
    case State::kReading: {
      error_code ec;
      stream_.socket().cancel(ec);  // the pending read completes with operation_aborted
      break;
    }
    case State::kHandling:
      if (!exchange_->fire_shutdown()) {
        Response r = json_error(503, "Server is shutting down");
        r.headers.emplace_back("retry-after", std::to_string(opts_.retry_after_seconds));
        exchange_->respond(std::move(r));
      }
      break;
    case State::kStreaming:
      if (!exchange_->fire_shutdown()) stream_end(exchange_);
      break;
    default:  // writing closes after the write; closing/closed need nothing
      break;
  }
}

// ---------------------------------------------------------------------------
// Session: reading

void Session::wait_for_request() {
  state_ = State::kReading;
  if (closing_) return close_now();
  if (buffer_.size() > 0) return read_request();  // pipelined bytes already here
  stream_.expires_after(first_request_ ? opts_.read_timeout : opts_.idle_timeout);
  stream_.async_read_some(
      buffer_.prepare(kFirstReadBytes),
      [self = shared_from_this()](error_code ec, size_t n) { self->on_first_bytes(ec, n); });
}

void Session::on_first_bytes(error_code ec, size_t n) {
  if (ec) return close_now();  // eof, idle timeout, or shutdown
  buffer_.commit(n);
  read_request();
}

void Session::read_request() {
  head_ = false;
  parser_ = std::make_unique<Parser>();
  parser_->header_limit(static_cast<uint32_t>(opts_.max_header_bytes + opts_.max_url_bytes + 1024));
  parser_->body_limit(opts_.max_body_bytes);
  parser_->eager(true);
  reject_reason_ = {};
  read_deadline_set_ = false;
  continue_request();
}

// Usually the whole request is already buffered (one read_some brought it):
// it is parsed here rather than through another async operation and timer.
// Otherwise more bytes are read into buffer_ and parsed the same way (not
// with bhttp::async_read: the raw header bytes must pass through buffer_ so
// that parse_buffered can check them before Beast folds them).
void Session::continue_request() {
  error_code ec;
  if (parse_buffered(ec)) return on_read(ec);
  if (!std::exchange(read_deadline_set_, true)) stream_.expires_after(opts_.read_timeout);
  stream_.async_read_some(buffer_.prepare(kReadBytes),
                          [self = shared_from_this()](error_code ec, size_t n) {
                            if (ec == net::error::eof) {
                              // As bhttp::async_read: EOF inside a message is a partial message.
                              if (self->parser_->got_some()) {
                                ec = {};
                                self->parser_->put_eof(ec);
                              } else {
                                ec = bhttp::error::end_of_stream;
                              }
                              return self->on_read(ec);
                            }
                            if (ec) return self->on_read(ec);
                            self->buffer_.commit(n);
                            self->continue_request();
                          });
}

// Feeds the buffered bytes to the parser the way bhttp::async_read does
// (eager, same limits). True when the request is complete or failed; false
// when more bytes are needed (the parser keeps its state).
bool Session::parse_buffered(error_code& ec) {
  while (buffer_.size() > 0) {
    if (!parser_->is_header_done() && !check_header_bytes(ec)) return true;
    size_t used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (ec == bhttp::error::need_more) {
      ec = {};
      return false;
    }
    if (ec || parser_->is_done()) return true;
    if (used == 0) return false;
  }
  return false;
}

// Before Beast parses a header section (it needs all of it, so it is whole
// in buffer_ once its end is there): obsolete line folding (a field line
// continued on the next line after SP/HTAB) is refused, as RFC 9112 5.2
// allows; Beast would join the lines silently. False (with `ec`) if refused.
bool Session::check_header_bytes(error_code& ec) {
  auto data = buffer_.data();
  std::string_view bytes(static_cast<const char*>(data.data()), data.size());
  size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) return true;  // not all there yet
  std::string_view header = bytes.substr(0, end + 2);
  for (size_t at = header.find("\r\n"); at != std::string_view::npos;
       at = header.find("\r\n", at + 2)) {
    if (at + 2 < header.size() && (header[at + 2] == ' ' || header[at + 2] == '\t')) {
      reject_reason_ = "obsolete line folding in a header field";
      ec = bhttp::error::bad_value;
      return false;
    }
  }
  return true;
}

// RFC 9112 checks Beast 1.81 does not make, on a parsed request: 400 and
// the reason, or empty. (Beast itself refuses Content-Length with
// Transfer-Encoding, duplicate chunked and malformed lengths.)
std::string_view Session::framing_problem() const {
  const auto& req = parser_->get();
  auto te = req.find(bhttp::field::transfer_encoding);
  if (te != req.end()) {
    // 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
    if (req.version() < 11) return "Transfer-Encoding is not allowed in an HTTP/1.0 request";
    // 6.3: chunked must be the final (here: the only) coding; anything else
    // leaves the body length unknown. Beast only acts on a final "chunked".
    size_t codings = 0;
    for (auto it = req.find(bhttp::field::transfer_encoding);
         it != req.end() && it->name() == bhttp::field::transfer_encoding; ++it) {
      for (auto coding : bhttp::token_list{it->value()}) {
        ++codings;
        if (!beast::iequals(coding, "chunked")) return "unsupported Transfer-Encoding";
      }
    }
    if (codings != 1) return "unsupported Transfer-Encoding";
  }
  // 3.2: an HTTP/1.1 request must carry exactly one Host field.
  if (req.version() >= 11) {
    auto [first, last] = req.equal_range(bhttp::field::host);
    if (first == last) return "missing Host header";
    if (std::next(first) != last) return "more than one Host header";
  }
  return {};
}

void Session::on_read(error_code ec) {
  if (ec && ec != bhttp::error::end_of_stream && is_http_parse_error(ec))
    begin_record({}, parser_->get().method());
  if (ec == bhttp::error::header_limit) {
    unsigned status = classify_header_limit();
    return write_error_and_close(status,
                                 status == 414 ? "URI too long" : "Request headers too large");
  }
  if (ec == bhttp::error::body_limit) return write_error_and_close(413, "Request body too large");
  if (ec && ec != bhttp::error::end_of_stream && is_http_parse_error(ec)) {
    spdlog::debug("http: malformed request: {}", ec.message());
    if (!reject_reason_.empty())
      return write_error_and_close(400, "Malformed request: " + std::string(reject_reason_));
    return write_error_and_close(400, "Malformed request");
  }
  if (ec) return close_now();  // eof, timeout, reset, shutdown
  if (auto problem = framing_problem(); !problem.empty()) {
    begin_record({}, parser_->get().method());
    return write_error_and_close(400, "Malformed request: " + std::string(problem));
  }

  first_request_ = false;
  const auto& req = parser_->get();
  begin_record({}, req.method());
  if (req.target().size() > opts_.max_url_bytes) return write_error_and_close(414, "URI too long");
  if (header_bytes() > opts_.max_header_bytes)
    return write_error_and_close(431, "Request headers too large");

  keep_alive_ = req.keep_alive();
  Params headers;
  for (const auto& field : req) headers.emplace_back(field.name_string(), field.value());
  Request request(req.method(), std::string(req.target()), std::move(headers),
                  std::move(parser_->get().body()));
  request.set_version(req.version());
  parser_.reset();
  handle(std::move(request));
}

// On header_limit: if the parser got through the request line, the target is
// known and decides; if not, the request line alone exceeded the whole header
// limit (which is larger than the URL limit), so the URL is too long.
unsigned Session::classify_header_limit() const {
  size_t target = parser_->get().target().size();
  if (target == 0) return 414;
  return target > opts_.max_url_bytes ? 414 : 431;
}

size_t Session::header_bytes() const {
  size_t n = 0;
  for (const auto& field : parser_->get())
    n += field.name_string().size() + field.value().size() + 4;
  return n;
}

void Session::handle(Request request) {
  origin_ = std::string(request.header("origin").value_or(""));
  const Router& router = server_->router;
  record_route_ = router.route_of(request.path());
  if (recording_) record_target_ = request.target();
  if (request.method() == Verb::options && !router.find(Verb::options, request.path())) {
    if (!router.has_path(request.path()))
      return write_response(json_error(404, "Not found"), false);
    Response r;
    r.status = 204;
    r.headers = {{"access-control-allow-methods", router.allowed_methods(request.path())},
                 {"access-control-allow-headers",
                  std::string(request.header("access-control-request-headers").value_or("*"))},
                 {"access-control-max-age", std::to_string(opts_.cors_max_age_seconds)}};
    return write_response(std::move(r), false);
  }
  // HEAD is GET without the body (as Electric serves it), unless routed itself.
  head_ = request.method() == Verb::head && !router.find(Verb::head, request.path());
  const Handler* handler = router.find(head_ ? Verb::get : request.method(), request.path());
  if (!handler) {
    if (!router.has_path(request.path()))
      return write_response(json_error(404, "Not found"), false);
    Response r = json_error(405, "Method not allowed");
    r.headers.emplace_back("allow", router.allowed_methods(request.path()));
    return write_response(std::move(r), false);
  }
  state_ = State::kHandling;
  // The exchange may stay parked for long (a live long-poll, an SSE stream):
  // without pipelined bytes, the read buffer goes until the next request, so
  // 10,000 parked clients do not hold 10,000 idle buffers.
  if (buffer_.size() == 0) buffer_.shrink_to_fit();
  exchange_ =
      std::make_shared<ExchangeImpl>(std::move(request), weak_from_this(), stream_.get_executor());
  stream_.expires_never();  // parked for as long as the handler likes
  start_watch();
  try {
    (*handler)(exchange_);
  } catch (const std::exception& e) {
    spdlog::error("http: handler threw: {}", e.what());
    exchange_->respond(json_error(500, "Internal server error"));
  }
}

// ---------------------------------------------------------------------------
// Session: writing

template <class Message>
void Session::add_common_headers(Message& m) {
  if (m.find("access-control-allow-origin") == m.end()) {
    m.set("access-control-allow-origin", origin_.empty() ? "*" : origin_);
    if (!origin_.empty()) m.insert("vary", "origin");
  }
  if (m.find("access-control-expose-headers") == m.end())
    m.set("access-control-expose-headers", opts_.cors_expose_headers);
}

void Session::build_message(bhttp::response<SharedBody>& res, Response response, bool keep_alive) {
  if (response.status < 100 || response.status > 999) {
    spdlog::error("http: handler answered invalid status {}", response.status);
    response = json_error(500, "Internal server error");
  }
  res.version(11);
  res.result(response.status);
  for (auto& [name, value] : response.headers) res.insert(name, value);
  add_common_headers(res);
  res.body() = std::move(response.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
}

void Session::write_response(Response response, bool close) {
  if (response.shared) {
    // Not through write_shared: this path also serves close/error cases.
    const Response& shared = response.shared->response();
    response.status = shared.status;
    response.headers = shared.headers;
    response.body = shared.body;
    response.file = shared.file;
    response.shared.reset();
  }
  std::optional<std::uint64_t> head_length;
  if (head_) {
    head_length = response.stream ? response.stream->length()
                  : response.file ? response.file->length
                                  : response.body_view().size();
    response.body = nullptr;
    response.file.reset();
    response.stream.reset();
  }
  if (response.stream) return write_stream_response(std::move(response), close);
  if (response.file) return write_file_response(std::move(response), close);
  state_ = State::kWriting;
  close_after_write_ = close || !keep_alive_ || closing_;
  record_response(response.headers, response.body_view().size());
  response_ = std::make_unique<bhttp::response<SharedBody>>();
  build_message(*response_, std::move(response), !close_after_write_);
  if (head_length) response_->content_length(*head_length);
  record_status_ = response_->result_int();
  stream_.expires_after(opts_.write_timeout);
  bhttp::async_write(stream_, *response_,
                     [self = shared_from_this()](error_code ec, size_t) { self->on_write(ec); });
}

// The complete message (status line, headers, body) as write_response would
// send it on this connection, for a keep-alive connection.
std::string Session::serialize(const Response& response) {
  bhttp::response<SharedBody> res;
  build_message(res, response, /*keep_alive=*/true);
  bhttp::response_serializer<SharedBody> sr(res);
  std::string out;
  out.reserve(512 + response.body_view().size());
  error_code ec;
  while (!ec && !sr.is_done()) {
    sr.next(ec, [&](error_code& next_ec, const auto& buffers) {
      next_ec = {};
      for (auto b : beast::buffers_range_ref(buffers))
        out.append(static_cast<const char*>(b.data()), b.size());
      sr.consume(beast::buffer_bytes(buffers));
    });
  }
  if (ec) spdlog::error("http: serializing a shared response failed: {}", ec.message());
  return out;
}

void Session::write_shared(const std::shared_ptr<const SharedResponse>& shared) {
  if (!keep_alive_ || closing_) return write_response(Response::share(shared), false);
  // The bytes depend on the request's Origin (CORS echo) and on this server's
  // options, so both select the variant.
  auto wire = shared->wire(&opts_, origin_, [&] { return serialize(shared->response()); });
  if (!wire || wire->empty()) return write_response(Response::share(shared), false);
  state_ = State::kWriting;
  close_after_write_ = false;
  record_status_ = shared->response().status;
  record_response(shared->response().headers, shared->response().body_view().size());
  wire_ = std::move(wire);
  stream_.expires_after(opts_.write_timeout);
  net::async_write(stream_, net::const_buffer(wire_->data(), wire_->size()),
                   [self = shared_from_this()](error_code ec, size_t) { self->on_write(ec); });
}

void Session::on_write(error_code ec) {
  response_.reset();
  wire_.reset();
  if (ec) {
    spdlog::debug("http: write failed: {}", ec.message());
    return close_now();
  }
  finish_record();
  if (close_after_write_) return linger_close();
  wait_for_request();
}

void Session::write_error_and_close(unsigned status, std::string_view message) {
  parser_.reset();
  write_response(json_error(status, message), /*close=*/true);
}

void Session::deliver(const std::shared_ptr<ExchangeImpl>& ex, Response response) {
  if (ex != exchange_ || state_ != State::kHandling) return;
  auto keep = std::move(parked_self_);  // the write below holds the session now
  stop_watch();
  exchange_->finish();
  exchange_.reset();
  if (response.shared && !head_) return write_shared(response.shared);
  write_response(std::move(response), false);
}

// ---------------------------------------------------------------------------
// Session: disconnect detection while parked. The socket becomes readable when
// the peer closes (or sends more); readable with nothing to read means gone.

void Session::start_watch() {
  watching_ = true;
  uint64_t generation = ++watch_generation_;
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      [self = shared_from_this(), generation](error_code ec) { self->on_watch(ec, generation); });
}

// The pending wait is not cancelled (a cancel costs a completion and, with
// two I/O threads, a reactor wake-up per response): it completes when the
// next request arrives (or the peer closes) and is then ignored as stale. The
// read for the next request queues behind it, so it is not tried
// speculatively (a wasted recv) before the client has sent anything.
void Session::stop_watch() {
  if (!watching_) return;
  watching_ = false;
  ++watch_generation_;
}

void Session::on_watch(error_code ec, uint64_t generation) {
  if (generation != watch_generation_ || !watching_) return;
  watching_ = false;
  if (ec == net::error::operation_aborted) return;
  if (state_ != State::kHandling && state_ != State::kStreaming) return;
  if (!ec) {
    // Readiness can be stale (edge-triggered epoll reporting bytes we already
    // consumed), so peek: 0 = orderly EOF, EAGAIN = spurious, >0 = pipelined.
    char byte;
    ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      // A pipelined request: read after this exchange. Nothing is pending on
      // the socket now, and the handler holds the exchange (which holds the
      // session weakly): without this the session would be destroyed, the
      // connection reset and every response lost. Released when the
      // exchange is answered, its stream ends, or the connection closes.
      parked_self_ = shared_from_this();
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return start_watch();
    }
  }
  spdlog::debug("http: client went away while parked");
  close_now();
}

// ---------------------------------------------------------------------------
// Session: server-sent events (chunked transfer, one chunk per frame)

void Session::stream_start(const std::shared_ptr<ExchangeImpl>& ex, Params headers) {
  if (ex != exchange_ || state_ != State::kHandling) return;
  state_ = State::kStreaming;
  record_status_ = 200;
  record_response(headers, 0);
  stream_header_ = std::make_unique<bhttp::response<bhttp::empty_body>>();
  auto& res = *stream_header_;
  res.version(11);
  res.result(bhttp::status::ok);
  for (auto& [name, value] : headers) res.insert(name, value);
  if (res.find(bhttp::field::content_type) == res.end())
    res.set(bhttp::field::content_type, "text/event-stream");
  add_common_headers(res);
  res.keep_alive(keep_alive_ && !closing_);
  res.chunked(true);
  stream_serializer_ = std::make_unique<bhttp::response_serializer<bhttp::empty_body>>(res);
  stream_header_pending_ = true;
  pump_stream();
}

void Session::stream_frame(const std::shared_ptr<ExchangeImpl>& ex,
                           std::shared_ptr<const std::string> frame) {
  if (ex != exchange_ || state_ != State::kStreaming || stream_ending_) return;
  record_body_bytes_ += frame->size();
  stream_frames_.push_back(std::move(frame));
  pump_stream();
}

void Session::stream_end(const std::shared_ptr<ExchangeImpl>& ex) {
  if (ex != exchange_ || state_ != State::kStreaming) return;
  stream_ending_ = true;
  pump_stream();
}

void Session::stream_abort(const std::shared_ptr<ExchangeImpl>& ex) {
  if (ex != exchange_) return;
  spdlog::debug("http: a response is cut (its body could not be completed)");
  close_now();
}

void Session::pump_stream() {
  if (stream_writing_) return;
  auto self = shared_from_this();
  if (stream_header_pending_) {
    stream_writing_ = true;
    stream_.expires_after(opts_.write_timeout);
    bhttp::async_write_header(stream_, *stream_serializer_, [self](error_code ec, size_t) {
      self->stream_header_pending_ = false;
      self->on_stream_write(ec);
    });
  } else if (!stream_frames_.empty()) {
    // Everything queued goes out as one chunk in one write.
    stream_writing_ = true;
    stream_sending_.assign(std::make_move_iterator(stream_frames_.begin()),
                           std::make_move_iterator(stream_frames_.end()));
    stream_frames_.clear();
    stream_buffers_.clear();
    for (const auto& frame : stream_sending_)
      stream_buffers_.emplace_back(frame->data(), frame->size());
    stream_.expires_after(opts_.write_timeout);
    net::async_write(stream_, bhttp::make_chunk(stream_buffers_), [self](error_code ec, size_t) {
      self->stream_sending_.clear();
      self->on_stream_write(ec);
    });
  } else if (stream_ending_) {
    stream_writing_ = true;
    stream_.expires_after(opts_.write_timeout);
    net::async_write(stream_, bhttp::make_chunk_last(),
                     [self](error_code ec, size_t) { self->on_stream_done(ec); });
  } else {
    stream_.expires_never();  // idle between frames; the handler paces the stream
  }
}

void Session::on_stream_write(error_code ec) {
  stream_writing_ = false;
  if (ec) {
    spdlog::debug("http: stream write failed: {}", ec.message());
    return close_now();
  }
  pump_stream();
}

void Session::on_stream_done(error_code ec) {
  stream_writing_ = false;
  bool keep_alive = stream_header_ && stream_header_->keep_alive() && !closing_;
  // The client may have gone (and the exchange been aborted) while the last
  // chunk was in flight.
  if (exchange_) exchange_->finish();
  exchange_.reset();
  stop_watch();
  stream_serializer_.reset();
  stream_header_.reset();
  stream_frames_.clear();
  stream_sending_.clear();
  stream_buffers_.clear();
  stream_ending_ = false;
  auto keep = std::move(parked_self_);
  if (ec) return close_now();
  finish_record();
  if (!keep_alive) return linger_close();
  wait_for_request();
}

// ---------------------------------------------------------------------------
// Session: request metrics

void Session::begin_record(std::string_view route, Verb method) {
  if (!opts_.on_request_done) return;
  recording_ = true;
  record_start_ = std::chrono::steady_clock::now();
  record_route_ = route;
  record_method_ = method;
  record_status_ = 0;
  record_sendfile_bytes_ = 0;
  record_target_.clear();
  record_body_bytes_ = 0;
  record_handle_.clear();
}

void Session::record_response(const Params& headers, std::size_t body_bytes) {
  if (!recording_) return;
  record_body_bytes_ += body_bytes;
  for (const auto& [name, value] : headers) {
    if (name == "electric-handle") record_handle_ = value;
  }
}

void Session::finish_record() {
  if (!recording_) return;
  recording_ = false;
  RequestRecord record{record_route_,
                       record_method_,
                       record_status_,
                       std::chrono::steady_clock::now() - record_start_,
                       record_sendfile_bytes_,
                       record_target_,
                       record_body_bytes_ + record_sendfile_bytes_,
                       record_handle_};
  try {
    opts_.on_request_done(record);
  } catch (const std::exception& e) {
    spdlog::error("http: request observer threw: {}", e.what());
  }
}

// ---------------------------------------------------------------------------
// Session: closing

void Session::abort_exchange() {
  if (!exchange_) return;
  auto ex = std::move(exchange_);
  ex->fire_abort();
}

void Session::close_now() {
  if (state_ == State::kClosed) return;
  recording_ = false;  // unanswered: not a request the client saw answered
  abort_exchange();
  stop_file();
  stream_send_.reset();
  state_ = State::kClosed;
  watching_ = false;
  // Dropped on return: may be the last reference to this session.
  auto keep = std::move(parked_self_);
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
}

// Closing right after writing with unread input makes the kernel send RST,
// which can destroy the response before the client reads it. Half-close and
// drain what the client still sends (bounded in time) first.
void Session::linger_close() {
  state_ = State::kClosing;
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return close_now();
  stream_.expires_after(std::min<std::chrono::milliseconds>(opts_.read_timeout, kMaxLinger));
  drain();
}

void Session::drain() {
  // What arrives is discarded: read into the request buffer, never committed.
  stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                          [self = shared_from_this()](error_code ec, size_t) {
                            if (ec) return self->close_now();
                            self->drain();
                          });
}

}  // namespace shapeproxy::http::detail
