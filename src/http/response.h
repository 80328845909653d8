// What: the response a handler hands back, plus helpers for JSON bodies and
// the protocol's JSON error shape {"message": "..."}.
// Why: keeps handlers free of Beast types; the body is a shared immutable
// buffer so answering 1,000 parked long-polls with the same bytes copies nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "http/request.h"

namespace shapeproxy::http {

class SharedResponse;

// A body that is a byte range of an open file (a snapshot chunk on disk). The
// server sends it with sendfile(2), so the bytes never pass through user
// space. `holder` keeps `descriptor` open until the last byte is sent, even
// if the file is unlinked meanwhile.
struct FileBody {
  std::shared_ptr<const void> holder;
  int descriptor = -1;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// A body made piece by piece while it is sent (a stored snapshot chunk
// decoded for a client that does not accept its coding), of a length known
// before the first byte: memory is one piece, whatever the body's size. The
// server calls read() on its I/O thread, one call at a time.
class StreamBody {
 public:
  virtual ~StreamBody() = default;
  virtual std::uint64_t length() const = 0;
  // Up to `capacity` more bytes into `out`: how many, 0 only at the end. An
  // error means the promised length cannot be kept: the server closes the
  // connection, so the client sees a cut body, never other bytes.
  virtual Result<std::size_t> read(char* out, std::size_t capacity) = 0;
};

struct Response {
  unsigned status = 200;
  // Extra headers. content-length and connection are set by the server; CORS
  // headers are added by the server unless already present here.
  Params headers;
  // Body bytes; null means empty. Shared and immutable: never mutate after send.
  std::shared_ptr<const std::string> body;
  // Instead of `body` (which is then null): the body is this file range,
  // sent with its content-length and without being read into memory.
  std::optional<FileBody> file;
  // Instead of `body` and `file`: made while it is sent (single use).
  std::shared_ptr<StreamBody> stream;
  // Fan-out fast path: when set, the response is `shared->response()` and the
  // fields above are ignored. The server then writes a wire form serialized
  // once per CORS variant and shared by every keep-alive connection.
  std::shared_ptr<const SharedResponse> shared;

  // A response that is `shared->response()`.
  static Response share(std::shared_ptr<const SharedResponse> shared);

  // Replaces any header with the same (case-insensitive) name.
  void set_header(std::string name, std::string value);
  std::string_view body_view() const { return body ? std::string_view(*body) : std::string_view(); }

  // `content-type: application/json` with the given serialized body.
  static Response json(unsigned status, std::string body);
  static Response json(unsigned status, std::shared_ptr<const std::string> body);
};

// One immutable response sent unchanged to many exchanges (the parked
// long-polls one commit wakes): the server serializes it (status line,
// headers, body) once per variant that differs on the wire (the CORS origin
// echo, the server's options) and writes those bytes to every connection.
// Thread-safe.
class SharedResponse {
 public:
  explicit SharedResponse(Response response);  // response.shared must be null

  const Response& response() const { return response_; }

  // The wire form for `key`, made by `serialize()` on first use (under a lock,
  // so concurrent callers wait for one serialization). Null once too many
  // variants exist: the caller then sends response() the ordinary way.
  template <class Serialize>
  std::shared_ptr<const std::string> wire(const void* owner, std::string_view origin,
                                          Serialize&& serialize) const {
    std::lock_guard lock(mu_);
    for (const auto& w : wires_)
      if (w.owner == owner && w.origin == origin) return w.bytes;
    if (wires_.size() >= kMaxVariants) return nullptr;
    auto bytes = std::make_shared<const std::string>(serialize());
    wires_.push_back({owner, std::string(origin), bytes});
    return bytes;
  }

 private:
  static constexpr size_t kMaxVariants = 8;
  struct Wire {
    const void* owner;   // what else the bytes depend on (the server's options)
    std::string origin;  // the request's Origin ("" when absent)
    std::shared_ptr<const std::string> bytes;
  };
  const Response response_;
  mutable std::mutex mu_;
  mutable std::vector<Wire> wires_;  // guarded by mu_
};

// {"message": message} with cache-control/surrogate-control: no-store.
Response json_error(unsigned status, std::string_view message);

}  // namespace shapeproxy::http
