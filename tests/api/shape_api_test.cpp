// Handler tests: ShapeApi on a real HttpServer (ephemeral port) over a fake
// ShapeService that answers with canned outcomes or parks reads for the test
// to complete later from another thread, and records cancels.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "api/shape_api.h"
#include "http/server.h"
#include "support/http_test_server.h"

namespace shapeproxy::api {
namespace {

namespace bhttp = boost::beast::http;
using json = nlohmann::json;
using namespace shapeproxy::testing;  // the HTTP test client
using namespace std::chrono_literals;

class FakeService : public shapes::ShapeService {
 public:
  struct Call {
    shapes::ShapeDefinitionRequest definition;
    shapes::ReadRequest request;
  };

  // The next reads answer these at once, in order; with none left, reads park.
  void answer_next(shapes::ReadOutcome outcome) {
    std::lock_guard lock(mu_);
    canned_.push_back(std::move(outcome));
  }

  std::function<void()> read(shapes::ShapeDefinitionRequest definition, shapes::ReadRequest request,
                             std::function<void(shapes::ReadOutcome)> done) override {
    std::unique_lock lock(mu_);
    calls_.push_back({std::move(definition), std::move(request)});
    int id = static_cast<int>(calls_.size()) - 1;
    if (!canned_.empty()) {
      auto outcome = std::move(canned_.front());
      canned_.pop_front();
      lock.unlock();
      done(std::move(outcome));
      return [] {};
    }
    parked_[id] = std::move(done);
    cv_.notify_all();
    return [this, id] {
      std::lock_guard lock(mu_);
      parked_.erase(id);
      cancelled_.push_back(id);
      cv_.notify_all();
    };
  }

  void remove(shapes::ShapeDefinitionRequest definition, std::optional<std::string> handle,
              std::function<void(Result<shapes::DeleteOutcome>)> done) override {
    {
      std::lock_guard lock(mu_);
      removed_.emplace_back(definition.table, handle);
    }
    done(shapes::DeleteOutcome{true, std::nullopt});
  }

  // Waits for read #id to be parked, then completes it from another thread.
  void complete(int id, shapes::ReadOutcome outcome) {
    std::function<void(shapes::ReadOutcome)> done;
    {
      std::unique_lock lock(mu_);
      EXPECT_TRUE(cv_.wait_for(lock, 10s, [&] { return parked_.count(id) > 0; }))
          << "read " << id << " never parked";
      if (!parked_.count(id)) return;
      done = std::move(parked_[id]);
      parked_.erase(id);
    }
    std::thread([done = std::move(done), outcome = std::move(outcome)]() mutable {
      done(std::move(outcome));
    }).join();
  }

  bool wait_parked(int id) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return parked_.count(id) > 0; });
  }
  bool wait_cancelled(int id) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] {
      return std::find(cancelled_.begin(), cancelled_.end(), id) != cancelled_.end();
    });
  }
  std::vector<Call> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<int> cancelled() {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> removed() {
    std::lock_guard lock(mu_);
    return removed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<shapes::ReadOutcome> canned_;
  std::vector<Call> calls_;
  std::map<int, std::function<void(shapes::ReadOutcome)>> parked_;
  std::vector<int> cancelled_;
  std::vector<std::pair<std::string, std::optional<std::string>>> removed_;
};

shapes::ReadResult result(shapes::LogOffset offset, std::string body, bool up_to_date) {
  shapes::ReadResult r;
  r.handle = "h1";
  r.offset = offset;
  r.body = std::make_shared<const std::string>(std::move(body));
  r.up_to_date = up_to_date;
  r.schema_json = R"({"id":{"type":"int4","pk_index":0,"not_null":true}})";
  return r;
}

constexpr char kUpToDate[] = R"([{"headers":{"control":"up-to-date"}}])";
constexpr char kTwoChanges[] =
    R"([{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1"},"headers":{"operation":"insert"}},)"
    R"({"headers":{"control":"up-to-date","global_last_seen_lsn":"12"}}])";

class ShapeApiTest : public ::testing::Test {
 protected:
  void TearDown() override {
    server_.stop();
    api_.reset();
  }

  void start(ShapeApiOptions options = {}) {
    options.clock = [] {
      return std::chrono::system_clock::time_point(
          std::chrono::seconds(kCursorEpochUnixSeconds + 101));
    };
    api_ = std::make_unique<ShapeApi>(service_, std::move(options));
    http::Router router;
    api_->register_routes(router);
    http::ServerOptions server_options;
    server_options.shutdown_grace = 2s;
    auto started = server_.start(std::move(router), std::move(server_options));
    ASSERT_TRUE(started.ok()) << started.error().to_string();
  }

  HttpTestConnection connect() { return server_.client().connect(); }
  // One request on a fresh connection.
  HttpResponse request(HttpVerb method, std::string_view target, const HttpHeaders& headers = {}) {
    return server_.client().request(method, target, headers);
  }
  HttpResponse get(std::string_view target, const HttpHeaders& headers = {}) {
    return server_.client().get(target, headers);
  }

  // Lets the server finish its side of an ended stream before the client
  // closes. Works around a transport race (http::Session::on_stream_done
  // dereferences exchange_ after close_now() reset it when the peer closes
  // between the last chunk's write and its completion handler).
  static void let_stream_end_settle() { std::this_thread::sleep_for(200ms); }

  FakeService service_;
  std::unique_ptr<ShapeApi> api_;
  HttpTestServer server_;
};

TEST_F(ShapeApiTest, SnapshotRequest) {
  start();
  service_.answer_next(result(shapes::LogOffset::snapshot_chunk(0), kTwoChanges, false));
  auto res = get("/v1/shape?table=Items&offset=-1&where=id%3D%241&params%5B1%5D=7&columns=id");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res["electric-handle"], "h1");
  EXPECT_EQ(res["electric-offset"], "0_0");
  EXPECT_EQ(res["electric-schema"], R"({"id":{"type":"int4","pk_index":0,"not_null":true}})");
  EXPECT_EQ(res["etag"], "\"h1:-1:0_0\"");
  EXPECT_EQ(res["cache-control"],
            "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746");
  EXPECT_EQ(res[bhttp::field::content_type], "application/json");
  EXPECT_EQ(res.body(), kTwoChanges);
  auto calls = service_.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].definition.table, "items");
  EXPECT_EQ(calls[0].definition.where, "id=$1");
  EXPECT_EQ(calls[0].definition.params.at(1), "7");
  EXPECT_EQ(calls[0].definition.columns, std::vector<std::string>{"id"});
  EXPECT_EQ(calls[0].request.start, shapes::ReadRequest::Start::kBeforeAll);
  EXPECT_FALSE(calls[0].request.live);
}

// A body the test hands over piece by piece (a new shape's first chunk while
// its query runs, rfc/0005).
class FakeBodyStream : public shapes::BodyStream {
 public:
  std::function<void()> subscribe(Sink sink) override {
    std::lock_guard lock(mu_);
    sink_ = std::move(sink);
    cv_.notify_all();
    return [this] {
      std::lock_guard lock(mu_);
      unsubscribed_ = true;
      cv_.notify_all();
    };
  }
  bool wait_subscribed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return static_cast<bool>(sink_.bytes); });
  }
  bool wait_unsubscribed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return unsubscribed_; });
  }
  void send(std::string bytes) {
    std::lock_guard lock(mu_);
    sink_.bytes(std::make_shared<const std::string>(std::move(bytes)));
  }
  void end(bool complete) {
    std::lock_guard lock(mu_);
    sink_.end(complete);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Sink sink_;
  bool unsubscribed_ = false;
};

shapes::ReadResult streaming_result(std::shared_ptr<shapes::BodyStream> stream) {
  shapes::ReadResult r = result(shapes::LogOffset::snapshot_chunk(0), "", false);
  r.body = nullptr;
  r.streaming = std::move(stream);
  r.fallback = true;
  return r;
}

// A GET of a first chunk that the service answers with a body still being
// made (`stream`), once the API has subscribed to it.
class StreamedFirstChunkTest : public ShapeApiTest {
 protected:
  void SetUp() override {
    start();
    service_.answer_next(streaming_result(stream));
    socket.emplace(connect());
    socket->send_get("/v1/shape?table=items&offset=-1");
    ASSERT_TRUE(stream->wait_subscribed());
  }

  std::shared_ptr<FakeBodyStream> stream = std::make_shared<FakeBodyStream>();
  std::optional<HttpTestConnection> socket;
};

// The headers of a first chunk do not depend on its rows: they go out at
// once, the body follows as it is made (HTTP/1.1 chunks), and the client
// reads the same response as if it had come whole.
TEST_F(StreamedFirstChunkTest, ANewShapesFirstChunkIsSentAsItIsMade) {
  std::string raw;
  socket->read_until(raw, "\r\n\r\n");  // the header, before any byte of the body
  EXPECT_NE(raw.find("HTTP/1.1 200"), std::string::npos) << raw;
  EXPECT_NE(raw.find("Transfer-Encoding: chunked"), std::string::npos) << raw;
  stream->send(R"([{"key":"k1","value":{"id":"1"},"headers":{"operation":"insert"}})");
  socket->read_until(raw, "k1");
  stream->send(R"(,{"headers":{"control":"snapshot-end","xmin":"1","xmax":"1","xip_list":[]}}])");
  stream->end(true);
  socket->read_until(raw, "\r\n0\r\n\r\n");
  auto res = parse_http_response(raw);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res["electric-handle"], "h1");
  EXPECT_EQ(res["electric-offset"], "0_0");
  EXPECT_EQ(res["electric-schema"], R"({"id":{"type":"int4","pk_index":0,"not_null":true}})");
  EXPECT_EQ(res["electric-fallback-mode"], "true");
  EXPECT_EQ(res["etag"], "\"h1:-1:0_0\"");
  EXPECT_EQ(res["cache-control"],
            "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746");
  EXPECT_EQ(res[bhttp::field::content_type], "application/json");
  EXPECT_EQ(res.count("electric-up-to-date"), 0u);
  auto messages = json::parse(res.body());
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0]["key"], "k1");
  EXPECT_TRUE(service_.calls()[0].request.may_stream);
  // Keep-alive: the connection serves the next request.
  service_.answer_next(result(shapes::LogOffset::snapshot_chunk(0), kTwoChanges, false));
  socket->send_get("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(socket->read_response().body(), kTwoChanges);
}

// A first chunk that cannot be completed (its query failed) is cut: the
// connection closes without the last chunk, and the client retries.
TEST_F(StreamedFirstChunkTest, AFirstChunkWhoseQueryFailsIsCut) {
  stream->send(R"([{"key":"k1","value":{"id":"1"},"headers":{"operation":"insert"}})");
  std::string raw;
  socket->read_until(raw, "k1");
  stream->end(false);
  socket->read_until(raw, "never sent");  // until the server closes
  EXPECT_EQ(raw.find("\r\n0\r\n\r\n"), std::string::npos) << raw;
  EXPECT_TRUE(socket->closed_by_server(5s));
  EXPECT_TRUE(stream->wait_unsubscribed());  // the exchange is gone
}

// Only reads that can take a body as it is made ask for one: a first chunk
// by GET or POST over HTTP/1.1; not HEAD (no body), not HTTP/1.0 (no
// chunks), not later offsets or live reads.
TEST_F(ShapeApiTest, OnlyFirstChunksOverHttp11MayStream) {
  start();
  for (int i = 0; i < 5; ++i)
    service_.answer_next(result(shapes::LogOffset::snapshot_chunk(0), "[]", false));
  EXPECT_EQ(get("/v1/shape?table=items&offset=-1").result_int(), 200);
  {
    auto head = connect();
    head.send(HttpVerb::head, "/v1/shape?table=items&offset=-1");
    std::string wire;
    head.read_until(wire, "\r\n\r\n");
    EXPECT_NE(wire.find("HTTP/1.1 200"), std::string::npos) << wire;
  }
  EXPECT_EQ(get("/v1/shape?table=items&offset=0_0&handle=h1").result_int(), 200);
  EXPECT_EQ(get("/v1/shape?table=items&offset=0_0&handle=h1&live=true").result_int(), 200);
  auto old = server_.client().raw("GET /v1/shape?table=items&offset=-1 HTTP/1.0\r\n\r\n");
  EXPECT_EQ(old.result_int(), 200);
  auto calls = service_.calls();
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_TRUE(calls[0].request.may_stream);
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_FALSE(calls[i].request.may_stream) << i;
}

TEST_F(ShapeApiTest, InvalidParamsGive400WithoutCallingTheService) {
  start();
  auto res = get("/v1/shape?table=items&offset=99999999999999999999999_1&handle=h");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_EQ(
      json::parse(res.body()),
      json::parse(R"({"message":"Invalid request","errors":{"offset":["has invalid format"]}})"));
  EXPECT_EQ(res[bhttp::field::cache_control], "no-store");
  EXPECT_TRUE(service_.calls().empty());
}

TEST_F(ShapeApiTest, SecretRequired) {
  ShapeApiOptions options;
  options.secret = "s3cret";
  start(options);
  auto denied = get("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(denied.result_int(), 401);
  EXPECT_EQ(json::parse(denied.body()), json({{"message", "Unauthorized - Invalid API secret"}}));
  service_.answer_next(result(shapes::LogOffset::snapshot_chunk(0), "[]", false));
  EXPECT_EQ(get("/v1/shape?table=items&offset=-1&secret=s3cret").result_int(), 200);
  EXPECT_EQ(service_.calls().size(), 1u);
}

TEST_F(ShapeApiTest, DeleteDisabledIs405) {
  start();
  auto res = request(bhttp::verb::delete_, "/v1/shape?table=items");
  EXPECT_EQ(res.result_int(), 405);
  EXPECT_TRUE(service_.removed().empty());
}

TEST_F(ShapeApiTest, DeleteEnabled) {
  ShapeApiOptions options;
  options.allow_delete = true;
  start(options);
  EXPECT_EQ(request(bhttp::verb::delete_, "/v1/shape?table=items&handle=h9").result_int(), 202);
  auto res = request(bhttp::verb::delete_, "/v1/shape");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_EQ(
      json::parse(res.body()),
      json::parse(
          R"({"message":"Invalid request","errors":{"handle":["can't be blank when shape definition is missing"]}})"));
  auto removed = service_.removed();
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].first, "items");
  EXPECT_EQ(removed[0].second, "h9");
}

TEST_F(ShapeApiTest, MustRefetchAndUnavailable) {
  start();
  service_.answer_next(shapes::MustRefetch{"h2"});
  auto refetch = get("/v1/shape?table=items&offset=5_0&handle=h1");
  EXPECT_EQ(refetch.result_int(), 409);
  EXPECT_EQ(json::parse(refetch.body()),
            json::parse(R"([{"headers":{"control":"must-refetch"}}])"));
  EXPECT_EQ(refetch["electric-handle"], "h2");
  EXPECT_EQ(refetch[bhttp::field::cache_control], "public, max-age=60, must-revalidate");

  service_.answer_next(shapes::Unavailable{"snapshot failed", 3s});
  auto down = get("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(down.result_int(), 503);
  EXPECT_EQ(down["retry-after"], "3");
  EXPECT_EQ(down[bhttp::field::cache_control], "no-store");
  EXPECT_EQ(down["surrogate-control"], "no-store");

  service_.answer_next(
      shapes::InvalidRequest{"table", "Table \"public\".\"nope\" does not exist."});
  auto bad = get("/v1/shape?table=nope&offset=-1");
  EXPECT_EQ(bad.result_int(), 400);
  EXPECT_EQ(json::parse(bad.body())["errors"]["table"][0],
            "Table \"public\".\"nope\" does not exist.");
}

TEST_F(ShapeApiTest, IfNoneMatchGives304) {
  start();
  service_.answer_next(result(shapes::LogOffset::at(9, 0), kUpToDate, true));
  bhttp::fields extra;
  extra.set(bhttp::field::if_none_match, "\"h1:5_0:9_0\"");
  auto res = get("/v1/shape?table=items&offset=5_0&handle=h1", extra);
  EXPECT_EQ(res.result_int(), 304);
  EXPECT_EQ(res.body(), "");
  EXPECT_EQ(res["electric-offset"], "9_0");
  EXPECT_EQ(res["etag"], "\"h1:5_0:9_0\"");
}

TEST_F(ShapeApiTest, LiveLongPollCompletedFromAnotherThread) {
  start();
  auto socket = connect();
  socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true&cursor=120");
  ASSERT_TRUE(service_.wait_parked(0));
  EXPECT_TRUE(service_.calls()[0].request.live);
  EXPECT_EQ(service_.calls()[0].request.handle, "h1");
  service_.complete(0, result(shapes::LogOffset::at(12, 1), kTwoChanges, true));
  auto res = socket.read_response();
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res["electric-cursor"], "140");
  EXPECT_EQ(res["electric-offset"], "12_1");
  EXPECT_EQ(res["electric-up-to-date"], "");
  EXPECT_EQ(res.find("electric-schema"), res.end());
  EXPECT_EQ(res[bhttp::field::cache_control], "public, max-age=5, stale-while-revalidate=5");
  EXPECT_EQ(res.body(), kTwoChanges);
  EXPECT_TRUE(service_.cancelled().empty());
}

// One commit waking many parked long-polls: those with the same offset and
// cursor share one pre-serialized response; the others still get theirs.
TEST_F(ShapeApiTest, OneCommitAnswersParkedLongPollsWithSharedBytes) {
  start();
  const std::string base = "/v1/shape?table=items&offset=5_0&handle=h1&live=true";
  struct Client {
    std::string target;
    bhttp::fields extra;
  };
  std::vector<Client> clients;
  for (int i = 0; i < 20; ++i) clients.push_back({base + "&cursor=120", {}});
  const size_t other_cursor = clients.size();
  clients.push_back({base + "&cursor=140", {}});
  const size_t close = clients.size();
  clients.push_back({base + "&cursor=120", {}});
  clients.back().extra.set(bhttp::field::connection, "close");
  const size_t origin = clients.size();
  clients.push_back({base + "&cursor=120", {}});
  clients.back().extra.set(bhttp::field::origin, "https://app.example");
  const size_t not_modified = clients.size();
  clients.push_back({base + "&cursor=120", {}});
  clients.back().extra.set(bhttp::field::if_none_match, "\"h1:5_0:12_1\"");

  std::vector<HttpTestConnection> sockets;
  for (size_t i = 0; i < clients.size(); ++i) {
    sockets.push_back(connect());
    sockets.back().send_get(clients[i].target, clients[i].extra);
    ASSERT_TRUE(service_.wait_parked(static_cast<int>(i)));
  }
  // The same ReadResult (one body buffer) for every waiter, as the registry
  // hands out.
  auto outcome = result(shapes::LogOffset::at(12, 1), kTwoChanges, true);
  for (size_t i = 0; i < clients.size(); ++i) service_.complete(static_cast<int>(i), outcome);

  std::vector<std::string> raw;
  for (auto& socket : sockets) raw.push_back(socket.read_raw_response());
  auto first = parse_http_response(raw[0]);
  EXPECT_EQ(first.result_int(), 200);
  EXPECT_EQ(first["electric-cursor"], "140");
  EXPECT_EQ(first["electric-offset"], "12_1");
  EXPECT_EQ(first["electric-handle"], "h1");
  EXPECT_EQ(first["etag"], "\"h1:5_0:12_1\"");
  EXPECT_EQ(first[bhttp::field::access_control_allow_origin], "*");
  EXPECT_EQ(first.body(), kTwoChanges);
  EXPECT_TRUE(first.keep_alive());
  for (size_t i = 0; i < other_cursor; ++i) EXPECT_EQ(raw[i], raw[0]) << "client " << i;

  auto other = parse_http_response(raw[other_cursor]);
  EXPECT_EQ(other.result_int(), 200);
  EXPECT_EQ(other["electric-cursor"], "160");
  EXPECT_EQ(other.body(), kTwoChanges);

  auto closed = parse_http_response(raw[close]);
  EXPECT_EQ(closed.result_int(), 200);
  EXPECT_EQ(closed["electric-cursor"], "140");
  EXPECT_EQ(closed.body(), kTwoChanges);
  EXPECT_FALSE(closed.keep_alive());

  auto with_origin = parse_http_response(raw[origin]);
  EXPECT_EQ(with_origin.result_int(), 200);
  EXPECT_EQ(with_origin[bhttp::field::access_control_allow_origin], "https://app.example");
  EXPECT_EQ(with_origin[bhttp::field::vary], "origin");
  EXPECT_EQ(with_origin["etag"], "\"h1:5_0:12_1\"");
  EXPECT_EQ(with_origin.body(), kTwoChanges);

  auto cached = parse_http_response(raw[not_modified]);
  EXPECT_EQ(cached.result_int(), 304);
  EXPECT_EQ(cached.body(), "");
}

TEST_F(ShapeApiTest, ClientDisconnectDuringLiveReadCancels) {
  start();
  {
    auto socket = connect();
    socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true");
    ASSERT_TRUE(service_.wait_parked(0));
  }  // closes the socket
  EXPECT_TRUE(service_.wait_cancelled(0));
}

TEST_F(ShapeApiTest, ShutdownAnswersParkedLongPollUpToDate) {
  start();
  auto socket = connect();
  socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true");
  ASSERT_TRUE(service_.wait_parked(0));
  std::promise<void> done;
  server_.shutdown([&] { done.set_value(); });
  auto res = socket.read_response();
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res["electric-offset"], "5_0");
  EXPECT_EQ(res["electric-handle"], "h1");
  EXPECT_EQ(res["electric-up-to-date"], "");
  EXPECT_TRUE(res.find("electric-cursor") != res.end());
  EXPECT_EQ(json::parse(res.body()), json::parse(kUpToDate));
  EXPECT_TRUE(service_.wait_cancelled(0));
  EXPECT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
  server_.stop();
}

TEST_F(ShapeApiTest, SseStreamsEventsKeepAlivesAndEnds) {
  ShapeApiOptions options;
  options.sse_keepalive = 100ms;
  options.sse_max_duration = 1500ms;
  start(options);
  // First read (not live) finds nothing new: the stream opens, nothing sent.
  service_.answer_next(result(shapes::LogOffset::at(5, 0), kUpToDate, true));
  auto socket = connect();
  socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true&live_sse=true&cursor=120");
  std::string raw;
  socket.read_until(raw, "\r\n\r\n");
  EXPECT_NE(raw.find("HTTP/1.1 200"), std::string::npos) << raw;
  EXPECT_NE(raw.find("text/event-stream"), std::string::npos) << raw;
  EXPECT_NE(raw.find("electric-handle: h1"), std::string::npos) << raw;
  EXPECT_NE(raw.find("electric-offset: 5_0"), std::string::npos) << raw;
  EXPECT_NE(raw.find("electric-cursor: 140"), std::string::npos) << raw;
  EXPECT_NE(raw.find("public, max-age=1"), std::string::npos) << raw;

  ASSERT_TRUE(service_.wait_parked(1));
  auto calls = service_.calls();
  EXPECT_FALSE(calls[0].request.live);
  EXPECT_TRUE(calls[1].request.live);
  EXPECT_EQ(calls[1].request.offset, shapes::LogOffset::at(5, 0));

  socket.read_until(raw, ": keep-alive\n\n");
  EXPECT_NE(raw.find(": keep-alive\n\n"), std::string::npos) << raw;

  service_.complete(1, result(shapes::LogOffset::at(12, 0), kTwoChanges, true));
  std::string first_event =
      R"(data: {"headers":{"operation":"insert"},"key":"\"public\".\"items\"/\"1\"","value":{"id":"1"}})"
      "\n\n";
  std::string second_event =
      R"(data: {"headers":{"control":"up-to-date","global_last_seen_lsn":"12"}})"
      "\n\n";
  socket.read_until(raw, second_event);
  EXPECT_NE(raw.find(first_event), std::string::npos) << raw;
  EXPECT_LT(raw.find(first_event), raw.find(second_event));

  ASSERT_TRUE(service_.wait_parked(2));
  EXPECT_EQ(service_.calls()[2].request.offset, shapes::LogOffset::at(12, 0));
  EXPECT_TRUE(service_.calls()[2].request.live);

  socket.read_until(raw, "0\r\n\r\n");  // the last chunk: max duration reached
  EXPECT_NE(raw.find("0\r\n\r\n"), std::string::npos) << raw;
  EXPECT_TRUE(service_.wait_cancelled(2));
  let_stream_end_settle();
}

// One commit wakes every SSE stream of a shape with the same body buffer:
// its frames are made once and the same bytes go to each stream.
TEST(SseFramesTest, FramesAreMadeOncePerBody) {
  SseFrames frames;
  auto body = std::make_shared<const std::string>(kTwoChanges);
  auto first = frames.frames(body);
  ASSERT_TRUE(first);
  EXPECT_EQ(
      *first,
      R"(data: {"headers":{"operation":"insert"},"key":"\"public\".\"items\"/\"1\"","value":{"id":"1"}})"
      "\n\n"
      R"(data: {"headers":{"control":"up-to-date","global_last_seen_lsn":"12"}})"
      "\n\n");
  EXPECT_EQ(frames.frames(body).get(), first.get());  // shared, not rendered again
  // Another buffer with the same bytes: the same frames, made anew.
  auto copy = frames.frames(std::make_shared<const std::string>(kTwoChanges));
  ASSERT_TRUE(copy);
  EXPECT_NE(copy.get(), first.get());
  EXPECT_EQ(*copy, *first);
  EXPECT_EQ(*frames.frames(std::make_shared<const std::string>("[]")), "");
  EXPECT_FALSE(frames.frames(std::make_shared<const std::string>("{\"not\":\"an array\"}")));
  EXPECT_FALSE(frames.frames(std::make_shared<const std::string>("[1,")));
}

TEST_F(ShapeApiTest, SseMustRefetchDuringStream) {
  start();
  service_.answer_next(result(shapes::LogOffset::at(5, 0), kUpToDate, true));
  auto socket = connect();
  socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true&live_sse=true");
  ASSERT_TRUE(service_.wait_parked(1));
  service_.complete(1, shapes::MustRefetch{"h2"});
  std::string raw;
  socket.read_until(raw, "0\r\n\r\n");
  EXPECT_NE(raw.find("data: {\"headers\":{\"control\":\"must-refetch\"}}\n\n"), std::string::npos)
      << raw;
  EXPECT_NE(raw.find("0\r\n\r\n"), std::string::npos) << raw;
  let_stream_end_settle();
}

TEST_F(ShapeApiTest, SseFirstReadErrorIsAPlainResponse) {
  start();
  service_.answer_next(shapes::MustRefetch{"h2"});
  auto res = get("/v1/shape?table=items&offset=5_0&handle=h1&live=true&live_sse=true");
  EXPECT_EQ(res.result_int(), 409);
  EXPECT_EQ(res["electric-handle"], "h2");
  EXPECT_EQ(json::parse(res.body()), json::parse(R"([{"headers":{"control":"must-refetch"}}])"));
}

TEST_F(ShapeApiTest, SseClientDisconnectCancelsTheLiveRead) {
  start();
  service_.answer_next(result(shapes::LogOffset::at(5, 0), kUpToDate, true));
  {
    auto socket = connect();
    socket.send_get("/v1/shape?table=items&offset=5_0&handle=h1&live=true&live_sse=true");
    ASSERT_TRUE(service_.wait_parked(1));
  }
  EXPECT_TRUE(service_.wait_cancelled(1));
}

}  // namespace
}  // namespace shapeproxy::api
