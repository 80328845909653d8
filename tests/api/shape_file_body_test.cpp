// Snapshot chunks served from disk, through the whole proxy (app::Proxy
// in-process, a real PostgreSQL, a data directory, small chunks). Chunks are
// stored gzip: to a client that accepts gzip every chunk fetched on one
// keep-alive connection decodes to rows equal to SELECT and went out with
// sendfile (the /metrics counter moves by exactly the bodies' bytes, so a
// silent fall-back to the buffered path fails the test); a client that does
// not gets the same bodies decoded (no sendfile), with another etag; both
// name Accept-Encoding in Vary; an etag revalidation answers 304 without a
// body; clients that vanish mid-body hurt nobody; a compaction swapping the
// snapshot out while a slow reader is mid-body still delivers that reader
// the full, original bytes; a chunk damaged on disk is never served as other
// bytes and its shape is dropped (409).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "app/proxy.h"
#include "storage/chunk_coding.h"
#include "support/postgres_test_environment.h"
#include "support/running_proxy.h"

namespace shapeproxy::api {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;
using ClientResponse = bhttp::response<bhttp::string_body>;
using testing::conninfo;
using testing::execute_sql;
using testing::query_value;

constexpr int kRows = 3000;
constexpr std::size_t kChunkBytes = 256 * 1024;  // rows are ~600 bytes: about 8 chunks

// One proxy on an ephemeral port with its own data directory and small chunks.
class RunningProxy : public testing::RunningProxy {
 public:
  RunningProxy(const std::string& database, std::uint64_t compact_bytes)
      : testing::RunningProxy(database, [compact_bytes](config::Config& config) {
          config.chunk_bytes = kChunkBytes;
          config.compact_bytes = compact_bytes;
        }) {}
};

class ShapeFileBodyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("file_body");
    execute_sql(database_,
                "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, pad text NOT NULL);"
                "INSERT INTO items SELECT g, 0, repeat(md5(g::text), 16) "
                "FROM generate_series(1, " +
                    std::to_string(kRows) + ") g");
  }

  tcp::socket connect(std::uint16_t port, int receive_buffer = 0) {
    tcp::socket socket(client_io_);
    socket.open(tcp::v4());
    if (receive_buffer > 0)
      socket.set_option(net::socket_base::receive_buffer_size(receive_buffer));
    socket.connect({net::ip::make_address("127.0.0.1"), port});
    timeval tv{20, 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return socket;
  }

  static void send(tcp::socket& socket, const std::string& target, bhttp::fields extra = {}) {
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "localhost");
    for (const auto& f : extra) req.set(f.name_string(), f.value());
    bhttp::write(socket, req);
  }

  static ClientResponse receive(tcp::socket& socket, beast::flat_buffer& buffer) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    bhttp::read(socket, buffer, parser);
    return parser.release();
  }

  ClientResponse get(std::uint16_t port, const std::string& target) {
    auto socket = connect(port);
    beast::flat_buffer buffer;
    send(socket, target);
    return receive(socket, buffer);
  }

  // Waits until replication is streaming (before that, new shapes may be
  // refused while the proxy is starting).
  void wait_active(std::uint16_t port) {
    for (auto deadline = std::chrono::steady_clock::now() + 30s;
         std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
      auto health = json::parse(get(port, "/v1/health").body(), nullptr, false);
      if (health.is_object() && health.value("status", "") == "active") return;
    }
    ADD_FAILURE() << "the proxy never became active";
  }

  std::uint64_t sendfile_bytes(std::uint16_t port) {
    auto metrics = get(port, "/metrics").body();
    constexpr std::string_view name = "\nshapeproxy_http_sendfile_bytes_total ";
    auto at = metrics.find(name);
    EXPECT_NE(at, std::string::npos) << metrics;
    return at == std::string::npos ? 0 : std::stoull(metrics.substr(at + name.size()));
  }

  // The counter once it reaches `expected` (a response is counted just after
  // its last byte left, so a scrape may run a moment ahead), or as it stays.
  std::uint64_t sendfile_bytes_reaching(std::uint16_t port, std::uint64_t expected) {
    std::uint64_t value = sendfile_bytes(port);
    for (int i = 0; i < 50 && value < expected; ++i) {
      std::this_thread::sleep_for(20ms);
      value = sendfile_bytes(port);
    }
    return value;
  }

  static bhttp::fields accept_gzip() {
    bhttp::fields fields;
    fields.set(bhttp::field::accept_encoding, "gzip, deflate");
    return fields;
  }

  // A gzip body decoded (its length from the trailer's ISIZE).
  static std::string gunzip(const std::string& member) {
    if (member.size() < 18) {
      ADD_FAILURE() << "not a gzip member: " << member;
      return {};
    }
    std::uint32_t size = 0;
    for (int i = 0; i < 4; ++i) {
      size |= static_cast<std::uint32_t>(static_cast<unsigned char>(member[member.size() - 4 + i]))
              << (8 * i);
    }
    auto body = storage::gunzip_chunk(member, size);
    EXPECT_TRUE(body) << body.error().to_string();
    return body ? body.value() : std::string();
  }

  // A client's sync from offset=-1 to up-to-date on one connection
  // (identity): the rows into `rows`; the handle it ended on.
  std::string sync(std::uint16_t port, std::map<std::string, std::string>& rows) {
    auto socket = connect(port);
    beast::flat_buffer buffer;
    std::string offset = "-1", current;
    for (int i = 0; i < 100; ++i) {
      std::string target = "/v1/shape?table=items&offset=" + offset;
      if (!current.empty()) target += "&handle=" + current;
      send(socket, target);
      auto response = receive(socket, buffer);
      EXPECT_EQ(response.result_int(), 200) << response.body();
      if (response.result_int() != 200) break;
      collect(response.body(), rows);
      current = std::string(response["electric-handle"]);
      offset = std::string(response["electric-offset"]);
      if (response.find("electric-up-to-date") != response.end()) return current;
    }
    ADD_FAILURE() << "never up-to-date";
    return current;
  }

  // {id: n} of the messages in a body.
  static void collect(const std::string& body, std::map<std::string, std::string>& rows) {
    for (const auto& message : json::parse(body)) {
      if (!message.contains("value")) continue;
      rows[message["value"]["id"].get<std::string>()] = message["value"]["n"].get<std::string>();
    }
  }

  std::map<std::string, std::string> select_rows() {
    std::map<std::string, std::string> rows;
    auto text =
        query_value(database_, "SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM items");
    std::stringstream in(text);
    for (std::string pair; std::getline(in, pair, ',');) {
      auto colon = pair.find(':');
      rows[pair.substr(0, colon)] = pair.substr(colon + 1);
    }
    return rows;
  }

  std::string database_;
  net::io_context client_io_;
};

TEST_F(ShapeFileBodyTest, ChunksComeFromDiskWithSendfileAndEqualSelect) {
  RunningProxy proxy(database_, 64 * 1024 * 1024);
  wait_active(proxy.port());
  // The first request creates the shape (its snapshot is written to disk
  // before it is served); count from after it.
  auto first = get(proxy.port(), "/v1/shape?table=items&offset=-1");
  ASSERT_EQ(first.result_int(), 200) << first.body();
  const std::uint64_t before = sendfile_bytes_reaching(proxy.port(), 0);

  // Every chunk on one keep-alive connection, as a client that accepts gzip.
  auto socket = connect(proxy.port());
  beast::flat_buffer buffer;
  std::map<std::string, std::string> rows;
  std::uint64_t snapshot_bytes = 0;
  int chunks = 0;
  std::string handle, offset = "-1";
  ClientResponse last;
  for (int i = 0; i < 100; ++i) {
    std::string target = "/v1/shape?table=items&offset=" + offset;
    if (!handle.empty()) target += "&handle=" + handle;
    send(socket, target, accept_gzip());
    last = receive(socket, buffer);
    ASSERT_EQ(last.result_int(), 200) << last.body();
    ASSERT_TRUE(last.keep_alive());
    handle = std::string(last["electric-handle"]);
    offset = std::string(last["electric-offset"]);
    if (last.find("electric-up-to-date") != last.end()) {
      EXPECT_EQ(last.find(bhttp::field::content_encoding), last.end()) << "a log body: as it is";
      collect(last.body(), rows);
      break;
    }
    ++chunks;  // a snapshot chunk: its body is exactly the stored gzip member
    EXPECT_EQ(last[bhttp::field::content_encoding], "gzip");
    EXPECT_EQ(last[bhttp::field::vary], "accept-encoding");
    EXPECT_TRUE(std::string(last[bhttp::field::etag]).ends_with(":gzip\""));
    collect(gunzip(last.body()), rows);
    snapshot_bytes += last.body().size();
    EXPECT_EQ(std::stoull(std::string(last[bhttp::field::content_length])), last.body().size());
  }
  ASSERT_NE(last.find("electric-up-to-date"), last.end()) << "never up-to-date";
  EXPECT_GE(chunks, 4) << "the shape should span several chunks";
  EXPECT_EQ(rows, select_rows());
  // Every snapshot chunk went out with sendfile, and nothing else did.
  EXPECT_EQ(sendfile_bytes_reaching(proxy.port(), before + snapshot_bytes) - before,
            snapshot_bytes);

  // The same connection still serves after sendfile responses: a live
  // request sees a new row.
  execute_sql(database_, "INSERT INTO items VALUES (100000, 7, 'new')");
  send(socket, "/v1/shape?table=items&live=true&handle=" + handle + "&offset=" + offset,
       accept_gzip());
  auto live = receive(socket, buffer);
  ASSERT_EQ(live.result_int(), 200);
  EXPECT_NE(live.body().find("\"100000\""), std::string::npos) << live.body();

  // A revalidation of a chunk answers 304 with no body and sends nothing from disk.
  const std::uint64_t before_304 = sendfile_bytes(proxy.port());
  send(socket, "/v1/shape?table=items&offset=-1", accept_gzip());
  auto again = receive(socket, buffer);
  ASSERT_EQ(again.result_int(), 200);
  bhttp::fields revalidate = accept_gzip();
  revalidate.set(bhttp::field::if_none_match, again[bhttp::field::etag]);
  send(socket, "/v1/shape?table=items&offset=-1", revalidate);
  auto not_modified = receive(socket, buffer);
  EXPECT_EQ(not_modified.result_int(), 304);
  EXPECT_TRUE(not_modified.body().empty());
  EXPECT_EQ(not_modified[bhttp::field::etag], again[bhttp::field::etag]);
  EXPECT_EQ(sendfile_bytes_reaching(proxy.port(), before_304 + again.body().size()) - before_304,
            again.body().size());
}

// The identity variant: each chunk decoded while sent, byte-identical to the
// gzip variant's body once decoded, its content-length the decoded length;
// its etag differs, so a cache's revalidation never crosses variants.
TEST_F(ShapeFileBodyTest, ClientsWithoutGzipGetEachChunkDecodedByteForByte) {
  RunningProxy proxy(database_, 64 * 1024 * 1024);
  wait_active(proxy.port());
  auto socket = connect(proxy.port());
  beast::flat_buffer buffer;
  std::map<std::string, std::string> rows;
  std::string handle, offset = "-1";
  int chunks = 0;
  std::uint64_t counted = sendfile_bytes(proxy.port());
  for (int i = 0; i < 100; ++i) {
    std::string target = "/v1/shape?table=items&offset=" + offset;
    if (!handle.empty()) target += "&handle=" + handle;
    send(socket, target, accept_gzip());
    auto gzip = receive(socket, buffer);
    ASSERT_EQ(gzip.result_int(), 200) << gzip.body();
    // The gzip variant's sendfile is counted just after its last byte left.
    counted = sendfile_bytes_reaching(proxy.port(), counted + gzip.body().size());
    const std::uint64_t sendfile_before = counted;
    bhttp::fields identity_only;
    identity_only.set(bhttp::field::accept_encoding, "identity, gzip;q=0");
    send(socket, target, i % 2 == 0 ? bhttp::fields{} : identity_only);
    auto identity = receive(socket, buffer);
    ASSERT_EQ(identity.result_int(), 200) << identity.body();
    ASSERT_TRUE(identity.keep_alive());
    EXPECT_EQ(identity.find(bhttp::field::content_encoding), identity.end());
    EXPECT_EQ(std::stoull(std::string(identity[bhttp::field::content_length])),
              identity.body().size());
    EXPECT_EQ(identity["electric-offset"], gzip["electric-offset"]);
    collect(identity.body(), rows);
    handle = std::string(identity["electric-handle"]);
    offset = std::string(identity["electric-offset"]);
    if (identity.find("electric-up-to-date") != identity.end()) break;
    ++chunks;
    EXPECT_EQ(identity[bhttp::field::vary], "accept-encoding");
    EXPECT_TRUE(identity.body() == gunzip(gzip.body())) << "chunk " << i;
    EXPECT_NE(identity[bhttp::field::etag], gzip[bhttp::field::etag]);
    EXPECT_EQ(sendfile_bytes(proxy.port()), sendfile_before) << "decoded: not from sendfile";
    // Each variant revalidates against its own etag only.
    bhttp::fields revalidate;
    revalidate.set(bhttp::field::if_none_match, identity[bhttp::field::etag]);
    send(socket, target, revalidate);
    EXPECT_EQ(receive(socket, buffer).result_int(), 304);
    revalidate.set(bhttp::field::if_none_match, gzip[bhttp::field::etag]);
    send(socket, target, revalidate);
    auto crossed = receive(socket, buffer);
    EXPECT_EQ(crossed.result_int(), 200);
    EXPECT_TRUE(crossed.body() == identity.body());
  }
  EXPECT_GE(chunks, 4);
  EXPECT_EQ(rows, select_rows());
  // HEAD names the decoded length without sending a body.
  bhttp::request<bhttp::empty_body> head{bhttp::verb::head, "/v1/shape?table=items&offset=-1", 11};
  head.set(bhttp::field::host, "localhost");
  bhttp::write(socket, head);
  bhttp::response_parser<bhttp::empty_body> head_parser;
  head_parser.skip(true);
  bhttp::read(socket, buffer, head_parser);
  EXPECT_EQ(head_parser.get().result_int(), 200);
  send(socket, "/v1/shape?table=items&offset=-1");
  auto whole = receive(socket, buffer);
  EXPECT_EQ(std::stoull(std::string(head_parser.get()[bhttp::field::content_length])),
            whole.body().size());
}

// One byte of a stored chunk damaged on disk while the proxy runs: an
// identity request is cut (never other bytes), that makes the proxy check
// the file again and drop the shape, and the client's next request with the
// handle gets 409 must-refetch; refetching gives rows equal to SELECT.
TEST_F(ShapeFileBodyTest, ADamagedChunkIsNeverServedAsOtherBytesAndItsShapeIsDropped) {
  RunningProxy proxy(database_, 64 * 1024 * 1024);
  wait_active(proxy.port());
  auto whole = get(proxy.port(), "/v1/shape?table=items&offset=-1");
  ASSERT_EQ(whole.result_int(), 200) << whole.body();
  const std::string handle(whole["electric-handle"]);
  const auto snapshot = proxy.dir() / "shapes" / handle / "snapshot.log";
  ASSERT_TRUE(std::filesystem::exists(snapshot));
  {
    // Past the first record's header and the gzip header: inside the data.
    std::fstream file(snapshot, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(200);
    char byte = 0;
    file.get(byte);
    file.seekp(200);
    file.put(static_cast<char>(byte ^ 0x5a));
  }
  // Clients starting over (offset=-1) get cut bodies or the original bytes,
  // until the shape was dropped and built again under a new handle.
  bool dropped = false;
  for (auto deadline = std::chrono::steady_clock::now() + 30s;
       !dropped && std::chrono::steady_clock::now() < deadline;) {
    auto socket = connect(proxy.port());
    beast::flat_buffer buffer;
    send(socket, "/v1/shape?table=items&offset=-1");
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    boost::system::error_code ec;
    bhttp::read(socket, buffer, parser, ec);
    if (ec) continue;  // cut: the promised length was not kept
    ASSERT_EQ(parser.get().result_int(), 200);
    if (parser.get()["electric-handle"] != handle) {
      dropped = true;
      break;
    }
    EXPECT_TRUE(parser.get().body() == whole.body()) << "a 200 with other bytes";
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(dropped) << "the shape with a damaged chunk was never dropped";
  // A client of the old shape, past its first chunk: 409 must-refetch.
  auto stale = get(proxy.port(), "/v1/shape?table=items&handle=" + handle +
                                     "&offset=" + std::string(whole["electric-offset"]));
  EXPECT_EQ(stale.result_int(), 409) << stale.body();
  // Refetching builds the shape again from the database.
  std::map<std::string, std::string> rows;
  EXPECT_NE(sync(proxy.port(), rows), handle);
  EXPECT_EQ(rows, select_rows());
}

TEST_F(ShapeFileBodyTest, ClientsGoneMidBodyLeaveTheProxyServing) {
  RunningProxy proxy(database_, 64 * 1024 * 1024);
  wait_active(proxy.port());
  auto whole = get(proxy.port(), "/v1/shape?table=items&offset=-1");
  ASSERT_EQ(whole.result_int(), 200) << whole.body();
  for (int i = 0; i < 10; ++i) {
    auto socket = connect(proxy.port(), 4096);
    send(socket, "/v1/shape?table=items&offset=-1");
    char some[1000];
    socket.read_some(net::buffer(some));  // the header and the body's start
    if (i % 2 == 0) {
      linger abort_close{1, 0};  // reset: the proxy's next sendfile fails
      setsockopt(socket.native_handle(), SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    }
    socket.close();
  }
  auto after = get(proxy.port(), "/v1/shape?table=items&offset=-1");
  ASSERT_EQ(after.result_int(), 200);
  EXPECT_EQ(after.body(), whole.body());
}

TEST_F(ShapeFileBodyTest, CompactionDuringASlowSendfileDeliversTheOriginalBody) {
  RunningProxy proxy(database_, 256 * 1024);
  wait_active(proxy.port());
  auto whole = get(proxy.port(), "/v1/shape?table=items&offset=-1");
  ASSERT_EQ(whole.result_int(), 200) << whole.body();
  const std::string handle(whole["electric-handle"]);
  auto shape_dir = proxy.dir() / "shapes" / handle;
  auto snapshot_files = [&] {
    std::set<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(shape_dir)) {
      auto name = entry.path().filename().string();
      if (name.starts_with("snapshot")) names.insert(name);
    }
    return names;
  };
  const auto original_files = snapshot_files();
  ASSERT_EQ(original_files.size(), 1u);

  // A reader that takes the header and a little of the body, then stalls
  // with a tiny receive window, so the proxy's sendfile is left mid-range.
  auto slow = connect(proxy.port(), 4096);
  send(slow, "/v1/shape?table=items&offset=-1");
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  bhttp::read_header(slow, buffer, parser);
  ASSERT_EQ(parser.get().result_int(), 200);

  // Enough updates to pass compact_bytes: the snapshot is rewritten under a
  // new name and the old file unlinked while the reader still stalls.
  execute_sql(database_, "UPDATE items SET n = n + 1");
  bool swapped = false;
  for (auto deadline = std::chrono::steady_clock::now() + 30s;
       !swapped && std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    auto now = snapshot_files();
    swapped = !now.empty() && !now.count(*original_files.begin());
  }
  ASSERT_TRUE(swapped) << "no compaction replaced " << *original_files.begin();

  bhttp::read(slow, buffer, parser);
  EXPECT_EQ(parser.get().body().size(), whole.body().size());
  EXPECT_TRUE(parser.get().body() == whole.body()) << "the slow reader got different bytes";

  // New readers get the compacted rows, equal to SELECT.
  std::map<std::string, std::string> rows;
  sync(proxy.port(), rows);
  EXPECT_EQ(rows, select_rows());
}

}  // namespace
}  // namespace shapeproxy::api
