// SnapshotStream: a new shape's snapshot rendered while its query's rows
// arrive (rfc/0005), so that the readers of its first chunk get the bytes as
// they are made instead of after the whole query, the render and the
// install, one after the other.
//
// The producer (the query's row observer, then the snapshot taker) adds the
// rows in order and finishes with the snapshot's end; the chunks rendered
// are then installed as the shape's (Shape::apply_snapshot), the same bytes
// SnapshotChunkWriter makes there, so a streamed first chunk and the same
// chunk read later are equal. Readers subscribe (BodyStream) to the first
// chunk: what is rendered so far at once, then each new piece of about
// `piece_bytes`, then its end, or a cut when the stream fails.
//
// Thread-safety: every method may be called from any thread; one mutex
// guards the state. The producer's calls come one at a time. Sinks run
// under the mutex (BodyStream's contract), `started` outside it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "shapes/shape_messages.h"
#include "shapes/shape_service.h"

namespace shapeproxy::shapes {

class SnapshotStream final : public BodyStream,
                             public std::enable_shared_from_this<SnapshotStream> {
 public:
  static constexpr std::size_t kPieceBytes = 256 * 1024;

  // `chunk_bytes`: the shape's largest body; `started`: called once, when
  // the first piece is out (readers can be answered with the stream from
  // then on), on the producer's thread.
  SnapshotStream(SnapshotRenderer renderer, std::size_t chunk_bytes,
                 std::function<void()> started = {}, std::size_t piece_bytes = kPieceBytes);

  // Producer: renders `rows` (the next in the query's order).
  void add(std::span<const Row> rows);
  // Producer: the snapshot-end message closes the snapshot; the first
  // chunk's readers get its end.
  void finish(const PgSnapshot& snapshot);
  // The query failed, or the shape went: readers' responses are cut. Does
  // nothing once finished.
  void fail();
  // After finish(): the rendered chunks, once.
  ShapeLog::Chunks take_chunks();

  std::size_t rows() const;
  // Whether the first piece is out (and the stream has not failed).
  bool started() const;
  bool failed() const;
  std::size_t subscribers() const;

  std::function<void()> subscribe(Sink sink) override;

 private:
  enum class State { kOpen, kEnded, kFailed };  // of the first chunk
  // Adds one message: to the first chunk's open piece while the first chunk
  // has room (SnapshotChunkWriter's rule), else to rest_.
  void add_message(std::string_view message);
  // Hands the open piece to readers (`force`: however small).
  void publish(bool force);
  // The first chunk is complete: its last piece out, its body made from its
  // pieces, readers ended.
  void close_first();
  // True once: when readers can first be answered with the stream.
  bool announce();

  const SnapshotRenderer renderer_;
  const std::size_t chunk_bytes_;
  const std::size_t piece_bytes_;
  std::function<void()> started_;

  mutable std::mutex mu_;
  // The first chunk, as pieces sent to readers and the piece being
  // written; guarded by mu_, as everything below.
  std::vector<std::shared_ptr<const std::string>> pieces_;
  std::string open_piece_ = "[";
  std::size_t first_bytes_ = 1;                    // the first chunk's size so far
  std::shared_ptr<const std::string> first_body_;  // once the first chunk is closed
  SnapshotChunkWriter rest_;                       // the chunks after the first
  std::string message_;                            // reused for each row's message
  std::size_t rows_ = 0;
  bool finished_ = false;
  ShapeLog::Chunks chunks_;  // after finish()
  State state_ = State::kOpen;
  bool announced_ = false;  // `started` was called
  std::uint64_t next_sink_ = 0;
  std::map<std::uint64_t, Sink> sinks_;
};

}  // namespace shapeproxy::shapes
