// What (internal): the Session's writing of a response whose body is a file
// range (Response::file, a snapshot chunk on disk): the header bytes with
// send(), then the range with sendfile(2) straight from the page cache to the
// socket, so large chunks never pass through user space.
// Why here: the socket is non-blocking and shared with Beast, so the loop is
// ours: short writes continue where they stopped, EAGAIN waits for
// writability (async_wait) under the write timeout, a peer gone mid-body
// (EPIPE/ECONNRESET) ends the session quietly, and the connection goes back
// to keep-alive afterwards through the ordinary on_write().
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/serializer.hpp>
#include <cerrno>
#include <cstring>

#include "http/session.h"

namespace shapeproxy::http::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = net::ip::tcp;

namespace {

// sendfile(2) has no MSG_NOSIGNAL: writing to a peer that is gone raises
// SIGPIPE, which kills the process by default. SIGPIPE is blocked on this
// thread while the calls run and one they raised is consumed (as libpq
// does), so the process-wide disposition is left alone.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeBlocked() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

  // After EPIPE: takes the SIGPIPE that call left pending.
  void consume() {
    timespec zero{};
    sigtimedwait(&pipe_, nullptr, &zero);
  }

 private:
  sigset_t pipe_;
  sigset_t previous_;
};

// One sendfile call never moves more than this (the kernel caps it near 2 GB).
constexpr std::uint64_t kMaxSendfileCall = std::uint64_t{1} << 30;

error_code errno_code(int error) { return error_code(error, boost::system::system_category()); }

bool peer_gone(const error_code& ec) {
  return ec == net::error::broken_pipe || ec == net::error::connection_reset;
}

// The status line and headers of `res` (its body is not part of them).
std::string serialize_header(bhttp::response<SharedBody>& res) {
  bhttp::response_serializer<SharedBody> sr(res);
  sr.split(true);
  std::string out;
  error_code ec;
  while (!ec && !sr.is_header_done()) {
    sr.next(ec, [&](error_code& next_ec, const auto& buffers) {
      next_ec = {};
      for (auto b : beast::buffers_range_ref(buffers))
        out.append(static_cast<const char*>(b.data()), b.size());
      sr.consume(beast::buffer_bytes(buffers));
    });
  }
  return out;
}

}  // namespace

void Session::write_file_response(Response response, bool close) {
  FileBody file = std::move(*response.file);
  response.file.reset();
  response.body = nullptr;
  if (response.status < 100 || response.status > 999) {
    return write_response(std::move(response), close);  // answered 500 there
  }
  state_ = State::kWriting;
  close_after_write_ = close || !keep_alive_ || closing_;
  record_response(response.headers, 0);  // the range is counted as sendfile bytes
  bhttp::response<SharedBody> res;
  build_message(res, std::move(response), !close_after_write_);
  res.content_length(file.length);
  record_status_ = res.result_int();
  auto& send = file_send_.emplace();
  send.header = serialize_header(res);
  send.file = std::move(file);
  send.deadline = std::chrono::steady_clock::now() + opts_.write_timeout;
  ++file_generation_;
  if (!opts_.sendfile) return send_file_buffered();
  error_code ec;
  stream_.socket().native_non_blocking(true, ec);
  if (ec) return send_file_buffered();
  pump_file();
}

// Sends as much as the socket takes now; waits for writability when it is full.
void Session::pump_file() {
  FileSend& send = *file_send_;
  const int socket = stream_.socket().native_handle();
  while (send.header_sent < send.header.size()) {
    // MSG_MORE: the header leaves in the same segment as the body's start.
    ssize_t n =
        ::send(socket, send.header.data() + send.header_sent, send.header.size() - send.header_sent,
               MSG_NOSIGNAL | MSG_DONTWAIT | (send.file.length > 0 ? MSG_MORE : 0));
    if (n >= 0) {
      send.header_sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_file_writable();
    return finish_file(errno_code(errno));
  }
  SigpipeBlocked blocked;
  while (send.file_sent < send.file.length) {
    off_t offset = static_cast<off_t>(send.file.offset + send.file_sent);
    auto want = static_cast<size_t>(std::min(send.file.length - send.file_sent, kMaxSendfileCall));
    ssize_t n = ::sendfile(socket, send.file.descriptor, &offset, want);
    if (n > 0) {
      send.file_sent += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n == 0) {  // the file ends before the range does: the length promised cannot be kept
      spdlog::error("http: a file body ended {} bytes early; closing the connection",
                    send.file.length - send.file_sent);
      return finish_file(net::error::eof);
    }
    const int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return wait_file_writable();
    if (error == EPIPE) blocked.consume();
    if ((error == EINVAL || error == ENOSYS || error == EOPNOTSUPP) && send.file_sent == 0) {
      spdlog::debug("http: sendfile unsupported for this file ({}); writing it buffered",
                    std::strerror(error));
      return send_file_buffered();
    }
    return finish_file(errno_code(error));
  }
  finish_file({});
}

void Session::wait_file_writable() {
  auto self = shared_from_this();
  if (!file_timer_armed_) {
    if (!file_timer_) file_timer_.emplace(stream_.get_executor());
    file_timer_armed_ = true;
    file_timer_->expires_at(file_send_->deadline);
    file_timer_->async_wait([self, generation = file_generation_](error_code ec) {
      self->on_file_timeout(ec, generation);
    });
  }
  stream_.socket().async_wait(tcp::socket::wait_write, [self](error_code ec) {
    if (!self->file_send_ || self->state_ != State::kWriting) return;  // closed meanwhile
    if (ec) return self->finish_file(ec);
    self->pump_file();
  });
}

void Session::on_file_timeout(error_code ec, uint64_t generation) {
  if (ec || generation != file_generation_ || !file_send_) return;
  file_timer_armed_ = false;
  spdlog::debug("http: file body write timed out");
  close_now();  // the pending writability wait completes as aborted
}

void Session::send_file_buffered() {
  FileSend& send = *file_send_;
  auto bytes = std::make_shared<std::string>(send.header.substr(send.header_sent));
  const std::uint64_t from = send.file.offset + send.file_sent;
  const std::uint64_t length = send.file.length - send.file_sent;
  const size_t start = bytes->size();
  bytes->resize(start + length);
  for (std::uint64_t done = 0; done < length;) {
    ssize_t got = ::pread(send.file.descriptor, bytes->data() + start + done, length - done,
                          static_cast<off_t>(from + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      spdlog::error("http: reading a file body: {}",
                    got < 0 ? std::strerror(errno) : "the file is shorter than the range");
      return finish_file(got < 0 ? errno_code(errno) : net::error::eof);
    }
    done += static_cast<std::uint64_t>(got);
  }
  wire_ = std::move(bytes);
  stream_.expires_at(send.deadline);
  net::async_write(stream_, net::const_buffer(wire_->data(), wire_->size()),
                   [self = shared_from_this()](error_code ec, size_t) {
                     if (!self->file_send_ || self->state_ != State::kWriting) return;
                     self->finish_file(ec);
                   });
}

// A piece of this size is read from the body per write: large enough that
// the per-write cost stays small, small enough to stay in the L2 cache.
constexpr std::size_t kStreamPiece = 128 * 1024;

void Session::write_stream_response(Response response, bool close) {
  auto body = std::move(response.stream);
  response.body = nullptr;
  response.file.reset();
  if (response.status < 100 || response.status > 999) {
    return write_response(std::move(response), close);  // answered 500 there
  }
  state_ = State::kWriting;
  close_after_write_ = close || !keep_alive_ || closing_;
  record_response(response.headers, body->length());
  bhttp::response<SharedBody> res;
  build_message(res, std::move(response), !close_after_write_);
  res.content_length(body->length());
  record_status_ = res.result_int();
  stream_send_ = std::make_shared<StreamSend>();
  stream_send_->body = std::move(body);
  stream_send_->header = serialize_header(res);
  stream_send_->deadline = std::chrono::steady_clock::now() + opts_.write_timeout;
  write_stream_piece();
}

void Session::write_stream_piece() {
  auto send = stream_send_;
  const std::uint64_t left = send->body->length() - send->sent;
  send->piece.resize(static_cast<std::size_t>(std::min<std::uint64_t>(left, kStreamPiece)));
  std::size_t filled = 0;
  while (filled < send->piece.size()) {
    auto got = send->body->read(send->piece.data() + filled, send->piece.size() - filled);
    if (!got || got.value() == 0) {
      // Nothing may stand for the missing bytes: the client must see a cut body.
      spdlog::error(
          "http: a streamed body failed after {} of {} bytes ({}); closing the connection",
          send->sent + filled, send->body->length(),
          got ? "it ended early" : got.error().to_string());
      return close_now();
    }
    filled += got.value();
  }
  std::array<net::const_buffer, 2> buffers{net::buffer(send->header), net::buffer(send->piece)};
  stream_.expires_at(send->deadline);
  net::async_write(stream_, buffers, [self = shared_from_this(), send](error_code ec, std::size_t) {
    if (self->stream_send_ != send || self->state_ != State::kWriting) return;
    send->sent += send->piece.size();
    send->header.clear();
    if (!ec && send->sent < send->body->length()) return self->write_stream_piece();
    self->stream_send_.reset();
    if (peer_gone(ec)) return self->close_now();
    self->on_write(ec);
  });
}

void Session::finish_file(error_code ec) {
  record_sendfile_bytes_ = file_send_ ? file_send_->file_sent : 0;
  stop_file();
  if (peer_gone(ec)) {
    spdlog::debug("http: client went away during a file body");
    return close_now();
  }
  on_write(ec);  // keep-alive or close, as for any response
}

void Session::stop_file() {
  file_send_.reset();  // releases the file (it may be an unlinked snapshot)
  if (file_timer_armed_) {
    file_timer_armed_ = false;
    file_timer_->cancel();
  }
}

}  // namespace shapeproxy::http::detail
