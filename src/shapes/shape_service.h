// ShapeService: what the HTTP shape API asks of the shapes core. It owns the
// registry of shapes (one per normalized definition), their logs and the
// live waiters. The HTTP layer parses and validates parameters, then calls
// read(); it never touches shape state directly. Implementations are
// thread-safe: callbacks may run on any thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/error_codes.h"
#include "common/result.h"
#include "shapes/log_offset.h"
#include "storage/chunk_coding.h"
#include "storage/read_only_file.h"

namespace shapeproxy::shapes {

enum class ReplicaMode { kDefault, kFull };
enum class LogMode { kFull, kChangesOnly };

// A shape as requested: names are unquoted (the HTTP layer resolves quoting),
// the where clause is raw user text (the service parses and validates it).
struct ShapeDefinitionRequest {
  std::string schema = "public";
  std::string table;
  std::optional<std::string> where;
  std::map<int, std::string> params;                // $n -> text value
  std::optional<std::vector<std::string>> columns;  // unset: all columns
  ReplicaMode replica = ReplicaMode::kDefault;
  LogMode log = LogMode::kFull;
};

struct ReadRequest {
  enum class Start { kBeforeAll, kNow, kAt };
  Start start = Start::kBeforeAll;  // offset=-1, offset=now, offset=<tx>_<op>
  LogOffset offset;                 // with kAt
  std::optional<std::string> handle;
  bool live = false;  // wait for new data (long-poll), up to the live timeout
  // The caller takes a ReadResult whose body is still being made
  // (`streaming`): a new shape's first chunk while its query runs.
  bool may_stream = false;
};

// A response body still being made: a new shape's first snapshot chunk,
// rendered while its query's rows arrive (rfc/0005). Thread-safe.
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  struct Sink {
    // The body's next bytes.
    std::function<void(std::shared_ptr<const std::string> bytes)> bytes;
    // Once, last: whether the body is complete; false: it was cut (the
    // query failed, the shape went), and the response must be aborted so
    // the client never takes a part for the whole.
    std::function<void(bool complete)> end;
  };
  // `sink` gets the bytes made so far at once, then each later piece, then
  // the end. Its callbacks run on any thread, under the stream's lock: they
  // must not call into the stream. Returns what unsubscribes (no callback
  // runs after it returns); it holds the stream weakly.
  virtual std::function<void()> subscribe(Sink sink) = 0;
};

// A successful read: the body is a JSON array of messages, in memory
// (`body`) or, for a snapshot chunk kept on disk, where it lies (`stored`:
// the file stays open while this result lives; the HTTP layer sends it with
// sendfile). Use read_body() where the bytes themselves are needed.
struct ReadResult {
  std::string handle;
  LogOffset offset;  // electric-offset: the last offset the body reaches
  std::shared_ptr<const std::string> body;
  storage::StoredChunk stored;  // set (file non-null) only when body is null
  // With `stored`: called (any thread) when the chunk turns out not to decode
  // while it is sent; the shape's snapshot file is verified again, and the
  // shape dropped (its clients get 409) when it is damaged. May be empty.
  std::function<void()> chunk_damaged;
  bool up_to_date = false;  // the body ends with the up-to-date control message
  std::string schema_json;  // electric-schema header value
  bool fallback = false;    // served from a direct query (degraded mode)
  // Instead of `body` and `stored` (only for a read with may_stream): the
  // body as it is made. The other fields do not depend on it.
  std::shared_ptr<BodyStream> streaming;
};

// The handle no longer names the current instance of the shape (rotated,
// deleted, unknown, or offset before the log's start): 409 must-refetch.
struct MustRefetch {
  std::optional<std::string> new_handle;  // the current instance, when one exists
};

// A parameter the service found invalid (unknown table or column, where
// clause outside the whitelist...): 400 naming `field`.
struct InvalidRequest {
  std::string field;  // "table", "where", "columns", "params", "offset", "handle"
  std::string message;
};

// Temporary trouble (database unreachable, snapshot failed, overloaded): 503
// with retry-after.
struct Unavailable {
  std::string message;
  std::chrono::seconds retry_after{5};
  // A follower's shapes cannot answer it (a shape it has not seen, data it
  // does not hold yet): the HTTP layer relays the request to the leader
  // instead, when it has a relay (rfc/0003); otherwise a 503 as above.
  bool elsewhere = false;
};

using ReadOutcome = std::variant<ReadResult, MustRefetch, InvalidRequest, Unavailable>;

// The body's bytes: `body`, or the stored chunk read from disk (pread: a
// blocking read of up to a chunk, so not on the shapes strand).
inline Result<std::shared_ptr<const std::string>> read_body(const ReadResult& result) {
  if (result.body || !result.stored.file) return result.body;
  auto bytes = storage::read_chunk(result.stored);
  if (!bytes) {
    if (bytes.error().code == error_codes::kStorageCorrupt && result.chunk_damaged) {
      result.chunk_damaged();
    }
    return bytes.error();
  }
  return std::make_shared<const std::string>(std::move(bytes).value());
}

struct DeleteOutcome {
  bool deleted = false;  // false: no such shape/handle
  // Set when nothing was deleted because the request is invalid (a bad
  // where clause, or a handle of a shape with another definition): 400.
  std::optional<InvalidRequest> invalid;
};

class ShapeService {
 public:
  virtual ~ShapeService() = default;

  // Resolves (or creates: catalog lookup, snapshot) the shape and reads its
  // log after the requested offset. A live read waits until new operations
  // arrive or the live timeout passes (then: an up-to-date-only body at the
  // same offset). `done` is called exactly once, unless the returned cancel
  // function is called first (client gone), after which it is not called.
  // The cancel function holds neither the service nor the read strongly, so
  // `done` may capture it (the read ending unfinished, e.g. at shutdown, then
  // frees both); calling it after the read is over does nothing.
  virtual std::function<void()> read(ShapeDefinitionRequest definition, ReadRequest request,
                                     std::function<void(ReadOutcome)> done) = 0;

  // Removes the shape (by handle if given, else by definition); its clients
  // get 409 from then on.
  virtual void remove(ShapeDefinitionRequest definition, std::optional<std::string> handle,
                      std::function<void(Result<DeleteOutcome>)> done) = 0;
};

}  // namespace shapeproxy::shapes
