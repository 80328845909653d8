#include "shapes/state_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace shapeproxy::shapes {
namespace {

constexpr char kRowTag = 'r';
constexpr char kMarkerTag = 'm';
constexpr char kNextIdTag = 'n';

void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

std::uint64_t get_u64(std::string_view in) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < 8 && i < in.size(); ++i)
    value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
}

void put_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}

bool get_varint(std::string_view& in, std::uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in.empty()) return false;
    auto byte = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

std::string id_prefix(std::uint64_t id) {
  std::string out;
  put_u64(out, id);
  return out;
}

std::string next_id_key() { return id_prefix(0) + kNextIdTag; }

rocksdb::WriteOptions write_options() {
  rocksdb::WriteOptions options;
  options.disableWAL = true;
  return options;
}

Error store_error(const char* what, const rocksdb::Status& status) {
  return Error{"storage_io", std::string("shape state store: ") + what + ": " + status.ToString(),
               "check the data directory (space, permissions); a damaged store is rebuilt from the "
               "shape logs if its directory is removed"};
}

// RocksDB's own messages (warnings and errors) go to the proxy's log, not
// to a LOG file in the store's directory: one place for operators to read,
// and no file writer that a full disk could leave failed (Debian's
// librocksdb 7.8 aborts the process when it writes again to a file writer
// that failed before: the next message after a failed LOG write did, at
// shutdown, in a test that filled the disk).
class SpdlogLogger : public rocksdb::Logger {
 public:
  explicit SpdlogLogger(rocksdb::InfoLogLevel level) : rocksdb::Logger(level) {}

  void Logv(const char* format, va_list ap) override { Logv(rocksdb::INFO_LEVEL, format, ap); }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel() || level == rocksdb::HEADER_LEVEL) return;
    char text[1024];
    va_list copy;
    va_copy(copy, ap);
    const int written = std::vsnprintf(text, sizeof text, format, copy);
    va_end(copy);
    if (written < 0) return;
    const auto spd_level = level >= rocksdb::ERROR_LEVEL  ? spdlog::level::err
                           : level == rocksdb::WARN_LEVEL ? spdlog::level::warn
                                                          : spdlog::level::debug;
    spdlog::log(spd_level, "shapes: state store (RocksDB): {}", text);
  }
};

// The first of `wanted` that this librocksdb was built with.
rocksdb::CompressionType first_supported(std::initializer_list<rocksdb::CompressionType> wanted) {
  auto supported = rocksdb::GetSupportedCompressions();
  for (auto type : wanted) {
    if (std::find(supported.begin(), supported.end(), type) != supported.end()) return type;
  }
  return rocksdb::kNoCompression;
}

}  // namespace

std::string encode_row(const where::RowValues& row) {
  std::string out;
  std::size_t bytes = 2;
  for (const auto& value : row) bytes += value ? value->size() + 2 : 1;
  out.reserve(bytes);
  put_varint(out, row.size());
  for (const auto& value : row) {
    if (!value) {
      out += '\0';
      continue;
    }
    put_varint(out, value->size() + 1);
    out += *value;
  }
  return out;
}

std::optional<where::RowValues> decode_row(std::string_view bytes) {
  std::uint64_t count = 0;
  if (!get_varint(bytes, count) || count > bytes.size()) return std::nullopt;
  where::RowValues row(count);
  for (auto& value : row) {
    std::uint64_t length = 0;
    if (!get_varint(bytes, length)) return std::nullopt;
    if (length == 0) continue;
    if (length - 1 > bytes.size()) return std::nullopt;
    value.emplace(bytes.substr(0, length - 1));
    bytes.remove_prefix(length - 1);
  }
  if (!bytes.empty()) return std::nullopt;
  return row;
}

std::string StateStore::row_key(std::uint64_t id, std::string_view key) {
  std::string out;
  out.reserve(9 + key.size());
  put_u64(out, id);
  out += kRowTag;
  out += key;
  return out;
}

std::string StateStore::marker_key(std::uint64_t id) {
  std::string out = id_prefix(0);
  out += kMarkerTag;
  put_u64(out, id);
  return out;
}

std::string StateStore::encode_marker(const StateMarker& marker) {
  std::string out;
  out += marker.through.before_all ? '\1' : '\0';
  put_u64(out, marker.through.tx);
  put_u64(out, marker.through.op);
  put_u64(out, marker.rows);
  return out;
}

Result<std::shared_ptr<StateStore>> StateStore::open(const std::filesystem::path& dir,
                                                     const StateStoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Error{"storage_io", "cannot create " + dir.string() + ": " + ec.message(),
                 "check permissions of the data directory"};
  }
  std::unique_ptr<rocksdb::Env> env;
  if (options.file_system) env = rocksdb::NewCompositeEnv(options.file_system);
  return open_with(dir, options, std::move(env), /*in_memory=*/false);
}

Result<std::shared_ptr<StateStore>> StateStore::in_memory(const StateStoreOptions& options) {
  std::unique_ptr<rocksdb::Env> env(rocksdb::NewMemEnv(rocksdb::Env::Default()));
  return open_with("/shape-state", options, std::move(env), /*in_memory=*/true);
}

Result<std::shared_ptr<StateStore>> StateStore::open_with(const std::filesystem::path& dir,
                                                          const StateStoreOptions& options,
                                                          std::unique_ptr<rocksdb::Env> env,
                                                          bool in_memory) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.write_buffer_size = options.write_buffer_bytes;
  db_options.max_write_buffer_number = 2;
  db_options.max_background_jobs = 2;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 2;
  db_options.max_manifest_file_size = 16 * 1024 * 1024;
  // Fresh data (memtable flushes, upper levels: the rows most likely read
  // again soon) in a fast codec; the bottommost level, where nearly all rows
  // of a settled store are, in ZSTD: about half the bytes of LZ4 for shape
  // rows (1M rows of bench/storage A: 26 -> 12 MB), at a slower decompression
  // of the blocks read from it (bench/README, issue 11).
  db_options.compression =
      first_supported({rocksdb::kLZ4Compression, rocksdb::kSnappyCompression, rocksdb::kZSTD});
  db_options.bottommost_compression = first_supported({rocksdb::kZSTD, db_options.compression});
  db_options.info_log_level = rocksdb::WARN_LEVEL;
  // (In memory, RocksDB's LOG is a file of the memory environment: kept
  // there, with its complaints about directories that environment lacks.)
  if (!in_memory) db_options.info_log = std::make_shared<SpdlogLogger>(db_options.info_log_level);
  // No WAL (every write has disableWAL: write_options()): the rows since
  // the last memtable flush are lost when the process dies, whole batches
  // at a time (a flush writes a prefix of the batches), so the markers
  // lag and the shape logs (which are synced) replay what is missing at
  // load (rfc/0002). This is also what a power loss did with a WAL that is
  // never synced. In return nothing is written twice, and no WAL file
  // writer exists that a failed write could leave behind (Debian's
  // librocksdb 7.8 aborts on a later write to it: see the header). The
  // recovery mode is for the WAL files a data directory written before may
  // still hold: replayed up to the first torn record.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  if (env) db_options.env = env.get();
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.cache_bytes);
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Index and filter in small partitions (a pinned top level over 4 KiB
  // blocks in the cache): one whole filter of a big table file (1.25 MB for
  // a million rows) is larger than a shard of the block cache (32 MB in 64
  // shards), never stays cached, and was read again from the file for every
  // lookup: a 1M-row snapshot took 100 s instead of 8 (bench/README, issue 11).
  table.index_type = rocksdb::BlockBasedTableOptions::IndexType::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = 4096;
  table.pin_top_level_index_and_filter = true;
  table.block_size = 16 * 1024;
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  db_options.memtable_whole_key_filtering = false;

  rocksdb::DB* raw = nullptr;
  auto status = rocksdb::DB::Open(db_options, dir.string(), &raw);
  if (!status.ok()) return store_error("cannot open", status);
  auto store = std::shared_ptr<StateStore>(new StateStore());
  store->env_ = std::move(env);
  // In memory, nothing outlives the process anyway.
  store->flush_every_ = in_memory ? std::chrono::hours(24 * 365) : options.flush_every;
  store->last_flush_ = std::chrono::steady_clock::now();
  store->db_.reset(raw);
  std::string next;
  status = store->db_->Get(rocksdb::ReadOptions(), next_id_key(), &next);
  if (status.ok()) {
    store->next_id_ = std::max<std::uint64_t>(1, get_u64(next));
  } else if (!status.IsNotFound()) {
    return store_error("cannot read", status);
  }
  return store;
}

StateStore::~StateStore() {
  if (db_) {
    // Flushed now, the memtables need no replay from the shape logs next time
    // (not after a failure: a stopped store takes no more writes of any kind).
    std::lock_guard lock(write_mu_);
    if (!write_failure_) (void)db_->Flush(rocksdb::FlushOptions());
    (void)db_->Close();
  }
  db_.reset();
}

std::uint64_t StateStore::allocate_id() {
  std::uint64_t id = next_id_++;
  std::string value;
  put_u64(value, next_id_);
  // Not fatal when it fails: at load, ids are reserved past every id in a
  // meta.json or the store, and a new shape empties its id's range first.
  std::lock_guard lock(write_mu_);
  if (!writable_locked()) return id;  // logged by the writes refused
  if (auto status = db_->Put(write_options(), next_id_key(), value); !status.ok())
    spdlog::error("shapes: {}", failed_locked(status).to_string());
  return id;
}

void StateStore::reserve_through(std::uint64_t id) { next_id_ = std::max(next_id_, id + 1); }

Result<std::optional<std::string>> StateStore::get(const std::string& key) const {
  std::string value;
  auto status = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (status.IsNotFound()) return std::optional<std::string>{};
  if (!status.ok()) return store_error("cannot read", status);
  return std::optional<std::string>(std::move(value));
}

Result<std::optional<StateMarker>> StateStore::marker(std::uint64_t id) const {
  auto value = get(marker_key(id));
  if (!value) return value.error();
  if (!value.value() || value.value()->size() != 25) return std::optional<StateMarker>{};
  std::string_view bytes = *value.value();
  StateMarker marker;
  marker.through.before_all = bytes[0] != 0;
  marker.through.tx = get_u64(bytes.substr(1));
  marker.through.op = get_u64(bytes.substr(9));
  marker.rows = get_u64(bytes.substr(17));
  return std::optional<StateMarker>(marker);
}

Result<std::vector<std::uint64_t>> StateStore::ids() const {
  std::vector<std::uint64_t> out;
  std::string prefix = id_prefix(0) + kMarkerTag;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    out.push_back(get_u64(std::string_view(it->key().data(), it->key().size()).substr(9)));
  }
  if (!it->status().ok()) return store_error("cannot list", it->status());
  return out;
}

void StateStore::flush_soon() {
  std::lock_guard lock(write_mu_);
  flush_soon_locked();
  last_flush_ = std::chrono::steady_clock::now();
}

void StateStore::flush_soon_locked() {
  if (write_failure_) return;
  rocksdb::FlushOptions options;
  options.wait = false;
  options.allow_write_stall = true;
  if (auto status = db_->Flush(options); !status.ok())
    spdlog::warn("shapes: {}", store_error("cannot flush", status).to_string());
}

Result<void> StateStore::write(rocksdb::WriteBatch& batch) {
  std::lock_guard lock(write_mu_);
  if (auto writable = writable_locked(); !writable) return writable;
  auto status = db_->Write(write_options(), &batch);
  if (!status.ok()) return failed_locked(status);
  if (const auto now = std::chrono::steady_clock::now(); now - last_flush_ >= flush_every_) {
    // Not while a flush is still under way: a second immutable memtable
    // would stall the writes until the first one is written.
    std::uint64_t immutable = 0;
    if (db_->GetIntProperty("rocksdb.num-immutable-mem-table", &immutable) && immutable == 0) {
      flush_soon_locked();
      last_flush_ = now;
    }
  }
  return {};
}

Result<void> StateStore::flush() {
  {
    std::lock_guard lock(write_mu_);
    if (auto writable = writable_locked(); !writable) return writable;
  }
  // Not under write_mu_: the shapes' writes go on meanwhile.
  rocksdb::FlushOptions options;
  options.allow_write_stall = true;
  if (auto status = db_->Flush(options); !status.ok()) {
    std::lock_guard lock(write_mu_);
    return failed_locked(status);
  }
  return {};
}

bool StateStore::all_flushed() const {
  std::uint64_t active = 0, immutable = 0;
  return db_->GetIntProperty("rocksdb.num-entries-active-mem-table", &active) &&
         db_->GetIntProperty("rocksdb.num-entries-imm-mem-tables", &immutable) && active == 0 &&
         immutable == 0;
}

std::optional<Error> StateStore::write_failure() const {
  std::lock_guard lock(write_mu_);
  return write_failure_;
}

Result<void> StateStore::writable_locked() {
  if (!write_failure_) return {};
  // RocksDB resumes from a full disk once there is space (its own recovery
  // may be under way: Busy, or done already: then this is a no-op), never
  // from a fatal error.
  auto resumed = db_->Resume();
  if (resumed.IsBusy()) return *write_failure_;
  if (!resumed.ok()) return failed_locked(resumed);
  write_failure_.reset();
  spdlog::info("shapes: the shape state store takes writes again");
  return {};
}

Error StateStore::failed_locked(const rocksdb::Status& status) {
  auto error = store_error("cannot write", status);
  if (status.severity() >= rocksdb::Status::Severity::kFatalError) {
    error.message += "; the store stopped and takes no writes until the proxy restarts";
    error.hint =
        "restart the proxy once the data directory's disk is healthy; nothing is lost: the store "
        "catches up from the shape logs at start";
  }
  write_failure_ = error;
  return error;
}

void StateStore::drop(rocksdb::WriteBatch& batch, std::uint64_t id) {
  batch.Delete(marker_key(id));
  batch.DeleteRange(id_prefix(id), id_prefix(id + 1));
}

std::unique_ptr<rocksdb::Iterator> StateStore::rows(std::uint64_t id,
                                                    const rocksdb::Snapshot* snapshot) const {
  rocksdb::ReadOptions options;
  options.snapshot = snapshot;
  options.fill_cache = false;  // a whole-shape read must not evict the hot rows
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
  it->Seek(row_key(id, {}));
  return it;
}

Result<void> StateStore::scan(
    std::uint64_t id, const rocksdb::Snapshot* snapshot,
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  rocksdb::ReadOptions options;
  options.snapshot = snapshot;
  options.fill_cache = false;  // a whole-shape scan must not evict the hot rows
  std::string prefix = row_key(id, {});
  std::string end = id_prefix(id + 1);
  rocksdb::Slice upper(end);
  options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    auto key = it->key();
    if (!key.starts_with(prefix)) break;
    if (!fn(std::string_view(key.data() + prefix.size(), key.size() - prefix.size()),
            std::string_view(it->value().data(), it->value().size()))) {
      break;
    }
  }
  if (!it->status().ok()) return store_error("cannot read", it->status());
  return {};
}

std::shared_ptr<const rocksdb::Snapshot> StateStore::snapshot() {
  auto* db = db_.get();
  return std::shared_ptr<const rocksdb::Snapshot>(
      db->GetSnapshot(), [db](const rocksdb::Snapshot* taken) { db->ReleaseSnapshot(taken); });
}

}  // namespace shapeproxy::shapes
