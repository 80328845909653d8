// What (internal): one Session per TCP connection, living on its own strand:
// reads requests (with timeouts and size limits), dispatches them to the
// router, parks exchanges while handlers work (watching for disconnects), and
// writes responses or SSE streams. ExchangeImpl is the handler-facing side.
// Responses whose body is a file range are written by session_file_body.cpp
// (headers, then sendfile).
// Why: Beast's one-object-per-connection pattern; every member of a Session is
// touched only on its strand, so there are no locks on the hot path.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "http/exchange.h"
#include "http/server_state.h"

namespace shapeproxy::http::detail {

// A Beast body whose value is a shared immutable string: one buffer can be
// written to many connections without copying.
struct SharedBody {
  using value_type = std::shared_ptr<const std::string>;
  static std::uint64_t size(const value_type& v) { return v ? v->size() : 0; }

  class writer {
   public:
    using const_buffers_type = boost::asio::const_buffer;
    template <bool isRequest, class Fields>
    writer(const boost::beast::http::header<isRequest, Fields>&, const value_type& body)
        : body_(body) {}
    void init(boost::system::error_code& ec) { ec = {}; }
    boost::optional<std::pair<const_buffers_type, bool>> get(boost::system::error_code& ec) {
      ec = {};
      if (done_ || !body_ || body_->empty()) return boost::none;
      done_ = true;
      return {{const_buffers_type(body_->data(), body_->size()), false}};
    }

   private:
    const value_type& body_;
    bool done_ = false;
  };
};

class Session;

class ExchangeImpl final : public Exchange, public std::enable_shared_from_this<ExchangeImpl> {
 public:
  ExchangeImpl(Request request, std::weak_ptr<Session> session,
               boost::asio::any_io_executor strand);

  const Request& request() const override { return request_; }
  void respond(Response response) override;
  bool responded() const override { return responded_.load(); }
  void start_event_stream(Params headers) override;
  void send_event(std::string data) override;
  void send_comment(std::string text) override;
  void send_frames(std::shared_ptr<const std::string> frames) override;
  void end_event_stream() override;
  void abort() override;
  void on_abort(std::function<void()> callback) override;
  void on_shutdown(std::function<void()> callback) override;

  // Strand side (called by Session).
  void fire_abort();     // once; runs the abort callbacks
  bool fire_shutdown();  // runs the shutdown callbacks; false if there were none
  void finish();         // answered: drop callbacks (they may hold the exchange)

 private:
  // Posts `f(session, self)` onto the session's strand if the session lives.
  template <class F>
  void post_to_session(F f);

  const Request request_;
  const std::weak_ptr<Session> session_;
  const boost::asio::any_io_executor strand_;
  std::atomic<bool> responded_{false};
  std::mutex mu_;
  bool aborted_ = false;                                   // guarded by mu_
  bool finished_ = false;                                  // guarded by mu_
  std::vector<std::function<void()>> abort_callbacks_;     // guarded by mu_
  std::vector<std::function<void()>> shutdown_callbacks_;  // guarded by mu_
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // id 0: not registered (a connection over the limit, answered 503).
  Session(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerState> server, uint64_t id);
  ~Session();

  void run();           // serve requests
  void run_rejected();  // answer 503 (connection limit) and close
  // Thread-safe: both post onto the strand.
  void begin_shutdown();
  void force_close();

  // Strand side, called by ExchangeImpl; ignored unless `ex` is current.
  void deliver(const std::shared_ptr<ExchangeImpl>& ex, Response response);
  void stream_start(const std::shared_ptr<ExchangeImpl>& ex, Params headers);
  void stream_frame(const std::shared_ptr<ExchangeImpl>& ex,
                    std::shared_ptr<const std::string> frame);
  void stream_end(const std::shared_ptr<ExchangeImpl>& ex);
  void stream_abort(const std::shared_ptr<ExchangeImpl>& ex);

 private:
  enum class State { kReading, kHandling, kWriting, kStreaming, kClosing, kClosed };
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  // Reading.
  void wait_for_request();
  void on_first_bytes(boost::system::error_code ec, size_t n);
  void read_request();
  void continue_request();
  bool parse_buffered(boost::system::error_code& ec);  // true: done or failed without I/O
  bool check_header_bytes(boost::system::error_code& ec);
  std::string_view framing_problem() const;
  void on_read(boost::system::error_code ec);
  unsigned classify_header_limit() const;  // 414 or 431
  size_t header_bytes() const;
  void handle(Request request);

  // Writing a complete response.
  void write_response(Response response, bool close);
  // Builds the message `response` becomes on this connection (CORS headers,
  // content-length, keep-alive).
  void build_message(boost::beast::http::response<SharedBody>& res, Response response,
                     bool keep_alive);
  // A shared response: its pre-serialized wire form when this connection can
  // use it (keep-alive), else the ordinary path.
  void write_shared(const std::shared_ptr<const SharedResponse>& shared);
  std::string serialize(const Response& response);
  void on_write(boost::system::error_code ec);
  void write_error_and_close(unsigned status, std::string_view message);

  // Writing a response whose body is a file range (session_file_body.cpp):
  // the header bytes with send(), then the range with sendfile() on the
  // non-blocking socket, waiting for writability on EAGAIN, all within the
  // write timeout; ends in on_write().
  void write_file_response(Response response, bool close);
  void pump_file();
  void wait_file_writable();
  void on_file_timeout(boost::system::error_code ec, uint64_t generation);
  // What is left of the header and the range, read and written the ordinary
  // way (sendfile disabled, or unsupported for this file).
  void send_file_buffered();
  void finish_file(boost::system::error_code ec);
  void stop_file();  // drops the range and the timer (done or closing)
  // Writing a response whose body is a StreamBody (session_file_body.cpp):
  // the header with the first piece, then piece after piece (one in memory),
  // within the write timeout; ends in on_write(), or closes the connection
  // when the body fails midway.
  void write_stream_response(Response response, bool close);
  void write_stream_piece();
  template <class Message>
  void add_common_headers(Message& m);

  // Parked exchange: disconnect detection.
  void start_watch();
  void stop_watch();
  void on_watch(boost::system::error_code ec, uint64_t generation);

  // SSE.
  void pump_stream();
  void on_stream_write(boost::system::error_code ec);
  void on_stream_done(boost::system::error_code ec);

  // Request metrics (ServerOptions::on_request_done) for the current request.
  void begin_record(std::string_view route, Verb method);
  void finish_record();  // the response was written: report it

  // Closing.
  void do_shutdown();
  void abort_exchange();
  void close_now();
  void linger_close();  // half-close, drain input briefly, then close
  void drain();

  const std::shared_ptr<ServerState> server_;
  const ServerOptions& opts_;
  const uint64_t id_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  // The parser, the response and the SSE header and serializer exist only
  // while in use (pointers, not optionals: a parked session holds none of
  // their ~1 KB; 10,000 parked clients, 10 MB).
  std::unique_ptr<Parser> parser_;
  std::string_view reject_reason_;  // why parse_buffered refused the header (a literal)
  bool read_deadline_set_ = false;  // this request's read timeout is armed
  State state_ = State::kReading;
  bool first_request_ = true;
  bool keep_alive_ = false;
  bool closing_ = false;  // graceful shutdown requested
  // The current request is a HEAD served by the GET route: its response is
  // written without a body, with the content-length the body would have had.
  bool head_ = false;
  bool close_after_write_ = false;
  std::string origin_;  // Origin of the current request (CORS echo)

  std::shared_ptr<ExchangeImpl> exchange_;  // parked or streaming exchange
  // Set while parked with a pipelined request waiting in the socket (no
  // operation pending keeps the session alive then); see on_watch().
  std::shared_ptr<Session> parked_self_;
  bool watching_ = false;
  uint64_t watch_generation_ = 0;

  std::unique_ptr<boost::beast::http::response<SharedBody>> response_;
  std::shared_ptr<const std::string> wire_;  // pre-serialized response being written

  std::unique_ptr<boost::beast::http::response<boost::beast::http::empty_body>> stream_header_;
  std::unique_ptr<boost::beast::http::response_serializer<boost::beast::http::empty_body>>
      stream_serializer_;
  // Frames waiting for the write in flight; stream_sending_ holds the ones
  // being written (all queued frames go out as one chunk, one write).
  std::deque<std::shared_ptr<const std::string>> stream_frames_;
  std::vector<std::shared_ptr<const std::string>> stream_sending_;
  std::vector<boost::asio::const_buffer> stream_buffers_;
  bool stream_header_pending_ = false;
  bool stream_writing_ = false;
  bool stream_ending_ = false;

  // The file-range response being written (session_file_body.cpp).
  struct FileSend {
    FileBody file;
    std::string header;  // status line and headers, serialized
    size_t header_sent = 0;
    std::uint64_t file_sent = 0;  // bytes of the range sent with sendfile
    std::chrono::steady_clock::time_point deadline;
  };
  std::optional<FileSend> file_send_;
  std::optional<boost::asio::steady_timer> file_timer_;  // the deadline while waiting
  bool file_timer_armed_ = false;
  uint64_t file_generation_ = 0;  // tells a stale timer completion apart

  // The StreamBody response being written; shared with the write in flight
  // (which holds its buffers).
  struct StreamSend {
    std::shared_ptr<StreamBody> body;
    std::string header;  // sent with the first piece
    std::string piece;
    std::uint64_t sent = 0;  // body bytes written
    std::chrono::steady_clock::time_point deadline;
  };
  std::shared_ptr<StreamSend> stream_send_;

  bool recording_ = false;
  std::chrono::steady_clock::time_point record_start_;
  std::string_view record_route_;  // points into the router (or a literal)
  Verb record_method_ = Verb::unknown;
  unsigned record_status_ = 0;
  uint64_t record_sendfile_bytes_ = 0;
  std::string record_target_;
  uint64_t record_body_bytes_ = 0;  // body bytes other than sendfile's
  std::string record_handle_;
  void record_response(const Params& headers, std::size_t body_bytes);
};

}  // namespace shapeproxy::http::detail
