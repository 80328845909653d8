// pgoutput and streaming-replication envelope decoding. Every read goes
// through a bounds-checked cursor over a string_view; on the first failure
// the cursor latches an error and the decoder returns it. Nothing here throws
// on malformed input or reads outside the given bytes.
#include "replication/pgoutput_decoder.h"

#include <cstring>
#include <utility>

namespace shapeproxy::replication {
namespace {

constexpr char kErrorCode[] = "malformed_pgoutput";

Error malformed(std::string message) {
  return Error{kErrorCode, std::move(message),
               "the replication stream is corrupt or not pgoutput protocol version 1"};
}

// A forward-only, bounds-checked reader of big-endian protocol fields. After
// a failed read `failed()` is true and further reads return zero values, so
// callers may check once after a group of reads.
class Cursor {
 public:
  explicit Cursor(std::string_view bytes) : data_(bytes) {}

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }
  std::size_t remaining() const { return data_.size() - pos_; }
  bool at_end() const { return pos_ == data_.size(); }

  std::uint8_t u8(const char* what) {
    if (!need(1, what)) return 0;
    return static_cast<std::uint8_t>(data_[pos_++]);
  }
  std::uint16_t u16(const char* what) { return static_cast<std::uint16_t>(be(2, what)); }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(be(4, what)); }
  std::uint64_t u64(const char* what) { return be(8, what); }
  std::int16_t i16(const char* what) { return static_cast<std::int16_t>(u16(what)); }
  std::int32_t i32(const char* what) { return static_cast<std::int32_t>(u32(what)); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(u64(what)); }

  // A NUL-terminated string; the terminator is consumed, not returned.
  std::string_view cstring(const char* what) {
    if (failed_) return {};
    const char* begin = data_.data() + pos_;
    const void* nul = std::memchr(begin, '\0', remaining());
    if (nul == nullptr) {
      fail(std::string("unterminated string: ") + what);
      return {};
    }
    std::size_t len = static_cast<const char*>(nul) - begin;
    pos_ += len + 1;
    return {begin, len};
  }

  std::string_view bytes(std::size_t n, const char* what) {
    if (!need(n, what)) return {};
    std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  std::string_view rest() {
    std::string_view out = data_.substr(pos_);
    pos_ = data_.size();
    return out;
  }

  void fail(std::string message) {
    if (failed_) return;
    failed_ = true;
    error_ = std::move(message);
  }

 private:
  bool need(std::size_t n, const char* what) {
    if (failed_) return false;
    if (remaining() < n) {
      fail(std::string("truncated message: ") + what);
      return false;
    }
    return true;
  }

  std::uint64_t be(std::size_t n, const char* what) {
    if (!need(n, what)) return 0;
    std::uint64_t value = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(data_.data() + pos_);
    for (std::size_t i = 0; i < n; ++i) value = (value << 8) | p[i];
    pos_ += n;
    return value;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
  std::string error_;
};

// Ends a decode: a latched error, or bytes left over after a complete
// message, turn into an Error; otherwise the value is returned.
template <typename T>
Result<PgOutputMessage> finish(Cursor& in, T&& message, char type) {
  if (in.failed()) return malformed(in.error() + " in '" + std::string(1, type) + "' message");
  if (!in.at_end()) {
    return malformed(std::to_string(in.remaining()) + " trailing bytes after '" +
                     std::string(1, type) + "' message");
  }
  return PgOutputMessage(std::forward<T>(message));
}

// Each column costs at least one byte on the wire, so a column count larger
// than the remaining bytes is malformed; checking it up front keeps a hostile
// count from causing a huge reserve().
bool read_count(Cursor& in, std::int64_t count, std::size_t min_bytes_each, const char* what) {
  if (in.failed()) return false;
  if (count < 0 || static_cast<std::uint64_t>(count) * min_bytes_each > in.remaining()) {
    in.fail(std::string("bad count: ") + what);
    return false;
  }
  return true;
}

void read_tuple(Cursor& in, TupleData& tuple) {
  std::int16_t ncols = in.i16("tuple column count");
  if (!read_count(in, ncols, 1, "tuple column count")) return;
  tuple.clear();
  tuple.reserve(static_cast<std::size_t>(ncols));
  for (std::int16_t i = 0; i < ncols && !in.failed(); ++i) {
    ColumnValue& column = tuple.emplace_back();
    char kind = static_cast<char>(in.u8("tuple column kind"));
    switch (kind) {
      case 'n':
        column.kind = ColumnValue::Kind::kNull;
        break;
      case 'u':
        column.kind = ColumnValue::Kind::kUnchangedToast;
        break;
      case 't':
      case 'b': {
        column.kind = kind == 't' ? ColumnValue::Kind::kText : ColumnValue::Kind::kBinary;
        std::int32_t len = in.i32("tuple column length");
        if (!in.failed() && len < 0) {
          in.fail("negative tuple column length");
          break;
        }
        column.data = in.bytes(static_cast<std::size_t>(len), "tuple column value");
        break;
      }
      default:
        if (!in.failed()) in.fail("unknown tuple column kind");
    }
  }
}

// Reads the 'N'/'K'/'O' marker that precedes a tuple.
char read_tuple_marker(Cursor& in) { return static_cast<char>(in.u8("tuple marker")); }

Result<PgOutputMessage> decode_begin(Cursor& in) {
  BeginMessage m;
  m.final_lsn = in.u64("final_lsn");
  m.commit_time = in.i64("commit_time");
  m.xid = in.u32("xid");
  return finish(in, std::move(m), 'B');
}

Result<PgOutputMessage> decode_commit(Cursor& in) {
  CommitMessage m;
  m.flags = in.u8("flags");
  m.commit_lsn = in.u64("commit_lsn");
  m.end_lsn = in.u64("end_lsn");
  m.commit_time = in.i64("commit_time");
  return finish(in, std::move(m), 'C');
}

Result<PgOutputMessage> decode_origin(Cursor& in) {
  OriginMessage m;
  m.commit_lsn = in.u64("origin lsn");
  m.name = in.cstring("origin name");
  return finish(in, std::move(m), 'O');
}

Result<PgOutputMessage> decode_relation(Cursor& in) {
  RelationMessage m;
  m.relation_oid = in.u32("relation oid");
  m.schema = in.cstring("namespace");
  m.name = in.cstring("relation name");
  m.replica_identity = static_cast<char>(in.u8("replica identity"));
  std::int16_t ncols = in.i16("column count");
  // flags + name NUL + type oid + typmod = 10 bytes at least per column.
  if (read_count(in, ncols, 10, "relation column count")) {
    m.columns.reserve(static_cast<std::size_t>(ncols));
    for (std::int16_t i = 0; i < ncols && !in.failed(); ++i) {
      RelationColumn& column = m.columns.emplace_back();
      column.is_key = (in.u8("column flags") & 1) != 0;
      column.name = in.cstring("column name");
      column.type_oid = in.u32("column type oid");
      column.type_modifier = in.i32("column type modifier");
    }
  }
  return finish(in, std::move(m), 'R');
}

Result<PgOutputMessage> decode_type(Cursor& in) {
  TypeMessage m;
  m.type_oid = in.u32("type oid");
  m.schema = in.cstring("type namespace");
  m.name = in.cstring("type name");
  return finish(in, std::move(m), 'Y');
}

Result<PgOutputMessage> decode_insert(Cursor& in) {
  InsertMessage m;
  m.relation_oid = in.u32("relation oid");
  char marker = read_tuple_marker(in);
  if (!in.failed() && marker != 'N') in.fail("expected 'N' tuple");
  read_tuple(in, m.new_tuple);
  return finish(in, std::move(m), 'I');
}

Result<PgOutputMessage> decode_update(Cursor& in) {
  UpdateMessage m;
  m.relation_oid = in.u32("relation oid");
  char marker = read_tuple_marker(in);
  if (!in.failed() && (marker == 'K' || marker == 'O')) {
    read_tuple(in, marker == 'K' ? m.key_tuple.emplace() : m.old_tuple.emplace());
    marker = read_tuple_marker(in);
  }
  if (!in.failed() && marker != 'N') in.fail("expected 'N' tuple");
  read_tuple(in, m.new_tuple);
  return finish(in, std::move(m), 'U');
}

Result<PgOutputMessage> decode_delete(Cursor& in) {
  DeleteMessage m;
  m.relation_oid = in.u32("relation oid");
  char marker = read_tuple_marker(in);
  if (!in.failed() && marker != 'K' && marker != 'O') in.fail("expected 'K' or 'O' tuple");
  if (!in.failed()) read_tuple(in, marker == 'K' ? m.key_tuple.emplace() : m.old_tuple.emplace());
  return finish(in, std::move(m), 'D');
}

Result<PgOutputMessage> decode_truncate(Cursor& in) {
  TruncateMessage m;
  std::int32_t nrels = in.i32("relation count");
  m.options = in.u8("truncate options");
  if (read_count(in, nrels, 4, "truncate relation count")) {
    m.relation_oids.reserve(static_cast<std::size_t>(nrels));
    for (std::int32_t i = 0; i < nrels && !in.failed(); ++i) {
      m.relation_oids.push_back(in.u32("truncate relation oid"));
    }
  }
  return finish(in, std::move(m), 'T');
}

Result<PgOutputMessage> decode_message(Cursor& in) {
  LogicalDecodingMessage m;
  m.transactional = (in.u8("message flags") & 1) != 0;
  m.lsn = in.u64("message lsn");
  m.prefix = in.cstring("message prefix");
  std::int32_t len = in.i32("message length");
  if (!in.failed() && len < 0) in.fail("negative message length");
  m.content = in.bytes(static_cast<std::size_t>(len), "message content");
  return finish(in, std::move(m), 'M');
}

}  // namespace

Result<CopyDataMessage> decode_copy_data(std::string_view bytes) {
  Cursor in(bytes);
  char type = static_cast<char>(in.u8("copy data type"));
  if (in.failed()) return malformed("empty CopyData message");
  if (type == 'w') {
    XLogData m;
    m.wal_start = in.u64("wal_start");
    m.wal_end = in.u64("wal_end");
    m.server_time = in.i64("server_time");
    if (in.failed()) return malformed(in.error() + " in 'w' XLogData");
    m.payload = in.rest();
    return CopyDataMessage(m);
  }
  if (type == 'k') {
    PrimaryKeepalive m;
    m.wal_end = in.u64("wal_end");
    m.server_time = in.i64("server_time");
    m.reply_requested = in.u8("reply_requested") != 0;
    if (in.failed()) return malformed(in.error() + " in 'k' keepalive");
    if (!in.at_end()) return malformed("trailing bytes after 'k' keepalive");
    return CopyDataMessage(m);
  }
  return malformed("unknown CopyData message type " +
                   std::to_string(static_cast<unsigned char>(type)));
}

Result<PgOutputMessage> decode_pgoutput(std::string_view bytes) {
  Cursor in(bytes);
  char type = static_cast<char>(in.u8("message type"));
  if (in.failed()) return malformed("empty pgoutput message");
  switch (type) {
    case 'B':
      return decode_begin(in);
    case 'C':
      return decode_commit(in);
    case 'O':
      return decode_origin(in);
    case 'R':
      return decode_relation(in);
    case 'Y':
      return decode_type(in);
    case 'I':
      return decode_insert(in);
    case 'U':
      return decode_update(in);
    case 'D':
      return decode_delete(in);
    case 'T':
      return decode_truncate(in);
    case 'M':
      return decode_message(in);
    default:
      return malformed("unknown pgoutput message type " +
                       std::to_string(static_cast<unsigned char>(type)));
  }
}

std::string encode_standby_status_update(Lsn written, Lsn flushed, Lsn applied,
                                         PgTimestamp client_time, bool reply_requested) {
  std::string out(34, '\0');
  out[0] = 'r';
  auto put64 = [&out](std::size_t at, std::uint64_t value) {
    for (int i = 7; i >= 0; --i, value >>= 8) out[at + i] = static_cast<char>(value & 0xff);
  };
  put64(1, written);
  put64(9, flushed);
  put64(17, applied);
  put64(25, static_cast<std::uint64_t>(client_time));
  out[33] = reply_requested ? 1 : 0;
  return out;
}

}  // namespace shapeproxy::replication
