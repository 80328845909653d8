#include "api/shape_headers.h"

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "api/offset_text.h"
#include "api/subset_params.h"
#include "common/error_codes.h"
#include "storage/chunk_coding.h"

namespace shapeproxy::api {
namespace {

constexpr char kOffsetMinusOneCache[] =
    "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746";
constexpr char kLiveCache[] = "public, max-age=5, stale-while-revalidate=5";

std::string cursor_header(const ShapeParams& params, const ShapeApiOptions& options) {
  return std::to_string(next_live_cursor(
      options.clock(), options.long_poll_timeout,
      params.cursor ? std::optional<std::string_view>(*params.cursor) : std::nullopt));
}

void add_no_store(http::Response& r) {
  r.set_header("cache-control", "no-store");
  r.set_header("surrogate-control", "no-store");
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view unquote(std::string_view s) {
  if (s.starts_with("W/")) s.remove_prefix(2);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// A live read that timed out without changes: its etag is made unique so a
// CDN revalidation never turns an empty live response into a 304 loop.
bool is_no_change_live(const shapes::ReadResult& result, const ShapeParams& params) {
  return params.read.live && params.read.start == shapes::ReadRequest::Start::kAt &&
         result.offset == params.read.offset;
}

// A stored gzip chunk decoded while it is sent, for a client that does not
// accept gzip: byte-identical to the body stored, or a cut body (the server
// closes the connection) and the shape's snapshot checked again.
class DecodedChunkBody : public http::StreamBody {
 public:
  DecodedChunkBody(storage::StoredChunk chunk, std::function<void()> damaged)
      : inflater_(std::move(chunk)), damaged_(std::move(damaged)) {}
  std::uint64_t length() const override { return inflater_.chunk().decoded_length; }
  Result<std::size_t> read(char* out, std::size_t capacity) override {
    auto got = inflater_.read(out, capacity);
    if (!got && got.error().code == error_codes::kStorageCorrupt && damaged_) {
      spdlog::error("shape api: {}", got.error().to_string());
      std::exchange(damaged_, nullptr)();
    }
    return got;
  }

 private:
  storage::ChunkInflater inflater_;
  std::function<void()> damaged_;
};

std::string unique_suffix() {
  return std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace

std::string success_cache_control(const ShapeParams& params, const ShapeApiOptions& options) {
  if (params.read.start == shapes::ReadRequest::Start::kBeforeAll) return kOffsetMinusOneCache;
  if (params.read.live && params.live_sse) {
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(options.sse_max_duration);
    return "public, max-age=" + std::to_string(std::max<std::int64_t>(1, seconds.count() - 1));
  }
  if (params.read.live) return kLiveCache;
  return "public, max-age=" + std::to_string(options.max_age_seconds) +
         ", stale-while-revalidate=" + std::to_string(options.stale_while_revalidate_seconds);
}

std::string shape_etag(std::string_view handle, std::string_view requested_offset,
                       std::string_view response_offset) {
  std::string out = "\"";
  out.append(handle).append(":").append(requested_offset).append(":").append(response_offset);
  out += '"';
  return out;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  std::string_view wanted = unquote(etag);
  while (true) {
    size_t comma = if_none_match.find(',');
    std::string_view item = trim(if_none_match.substr(0, comma));
    if (item == "*" || (!item.empty() && unquote(item) == wanted)) return true;
    if (comma == std::string_view::npos) return false;
    if_none_match.remove_prefix(comma + 1);
  }
}

namespace {

http::Response build_read_response(const shapes::ReadResult& result, const ShapeParams& params,
                                   const ShapeApiOptions& options,
                                   std::optional<std::string_view> if_none_match,
                                   std::string cursor) {
  http::Response r;
  bool gzip = false;
  if (!result.body && result.stored.file) {
    // A snapshot chunk on disk: sent from the file (sendfile), never read
    // here; a gzip one as it is to clients that accept gzip, else decoded
    // as it is sent. Both variants name Accept-Encoding in Vary (a cache
    // keeps one per coding) and differ in their etag (RFC 9110 8.8.3).
    const storage::StoredChunk& chunk = result.stored;
    r = http::Response::json(200, std::shared_ptr<const std::string>());
    gzip = chunk.coding == storage::ChunkCoding::kGzip && params.accepts_gzip;
    if (chunk.coding == storage::ChunkCoding::kGzip && !gzip) {
      r.stream = std::make_shared<DecodedChunkBody>(chunk, result.chunk_damaged);
    } else {
      r.file = http::FileBody{chunk.file, chunk.file->descriptor(), chunk.offset, chunk.length};
    }
    if (chunk.coding == storage::ChunkCoding::kGzip)
      r.headers.emplace_back("vary", "accept-encoding");
    if (gzip) r.headers.emplace_back("content-encoding", "gzip");
  } else {
    auto body = result.body ? result.body : std::make_shared<const std::string>("[]");
    r = http::Response::json(200, std::move(body));
  }
  std::string offset = offset_text(result.offset);
  std::string etag = shape_etag(result.handle, params.requested_offset, offset);
  if (is_no_change_live(result, params)) etag.insert(etag.size() - 1, ":" + unique_suffix());
  if (gzip) etag.insert(etag.size() - 1, ":gzip");
  r.headers.reserve(10);
  r.headers.emplace_back("electric-handle", result.handle);
  r.headers.emplace_back("electric-offset", std::move(offset));
  if (params.read.live)
    r.headers.emplace_back("electric-cursor", std::move(cursor));
  else
    r.headers.emplace_back("electric-schema", result.schema_json);
  if (result.up_to_date) r.headers.emplace_back("electric-up-to-date", "");
  if (result.fallback) r.headers.emplace_back("electric-fallback-mode", "true");
  r.headers.emplace_back("cache-control", success_cache_control(params, options));
  if (if_none_match && etag_matches(*if_none_match, etag)) {
    r.status = 304;
    r.body = nullptr;
    r.file.reset();  // the file is not touched for a 304
    r.stream.reset();
    std::erase_if(r.headers, [](const auto& h) {
      return http::iequals(h.first, "content-type") || http::iequals(h.first, "content-encoding");
    });
  }
  r.headers.emplace_back("etag", std::move(etag));
  return r;
}

}  // namespace

http::Response read_response(const shapes::ReadResult& result, const ShapeParams& params,
                             const ShapeApiOptions& options,
                             std::optional<std::string_view> if_none_match) {
  return build_read_response(result, params, options, if_none_match,
                             params.read.live ? cursor_header(params, options) : std::string());
}

http::Response SharedReadResponses::get(const shapes::ReadResult& result, const ShapeParams& params,
                                        const ShapeApiOptions& options,
                                        std::optional<std::string_view> if_none_match) {
  if (!params.read.live || params.live_sse || !result.body || is_no_change_live(result, params))
    return read_response(result, params, options, if_none_match);
  std::string cursor = cursor_header(params, options);
  std::lock_guard lock(mu_);
  for (const Entry& e : entries_) {
    if (e.response && e.body == result.body.get() && e.offset == result.offset &&
        e.up_to_date == result.up_to_date && e.fallback == result.fallback && e.cursor == cursor &&
        e.requested_offset == params.requested_offset && e.handle == result.handle) {
      if (if_none_match && etag_matches(*if_none_match, e.etag)) break;  // a 304: not shared
      return http::Response::share(e.response);
    }
  }
  http::Response r =
      build_read_response(result, params, options, if_none_match, std::string(cursor));
  if (r.status != 200) return r;
  Entry& e = entries_[next_];
  next_ = (next_ + 1) % kEntries;
  e.body = result.body.get();
  e.handle = result.handle;
  e.offset = result.offset;
  e.up_to_date = result.up_to_date;
  e.fallback = result.fallback;
  e.requested_offset = params.requested_offset;
  e.cursor = std::move(cursor);
  e.etag = r.headers.back().second;
  e.response = std::make_shared<const http::SharedResponse>(std::move(r));
  return http::Response::share(e.response);
}

http::Response subset_outcome_response(const shapes::ReadResult& shape,
                                       shapes::SubsetOutcome outcome) {
  if (auto* invalid = std::get_if<shapes::InvalidRequest>(&outcome)) {
    if (invalid->field == "table" || invalid->field == "columns")
      return service_invalid_response(*invalid);
    return invalid_subset_response({{invalid->field, {invalid->message}}});
  }
  if (auto* unavailable = std::get_if<shapes::Unavailable>(&outcome))
    return unavailable_response(*unavailable);
  auto& result = std::get<shapes::SubsetResult>(outcome);
  http::Response r =
      http::Response::json(200, std::make_shared<const std::string>(std::move(result.body)));
  r.headers.emplace_back("electric-handle", shape.handle);
  r.headers.emplace_back("electric-offset", offset_text(shape.offset));
  r.headers.emplace_back("electric-schema", shape.schema_json);
  r.headers.emplace_back("electric-snapshot", "true");
  if (shape.fallback) r.headers.emplace_back("electric-fallback-mode", "true");
  r.headers.emplace_back("cache-control", "no-cache");
  return r;
}

std::string must_refetch_message() { return R"({"headers":{"control":"must-refetch"}})"; }

http::Response must_refetch_response(const shapes::MustRefetch& outcome) {
  http::Response r = http::Response::json(409, "[" + must_refetch_message() + "]");
  if (outcome.new_handle) r.headers.emplace_back("electric-handle", *outcome.new_handle);
  r.headers.emplace_back("cache-control", outcome.new_handle
                                              ? "public, max-age=60, must-revalidate"
                                              : "public, max-age=1, must-revalidate");
  return r;
}

http::Response service_invalid_response(const shapes::InvalidRequest& outcome) {
  ValidationErrors errors;
  errors[outcome.field.empty() ? "request" : outcome.field].push_back(outcome.message);
  return invalid_request_response(errors);
}

http::Response unavailable_response(const shapes::Unavailable& outcome) {
  nlohmann::json body = {{"message", outcome.message}};
  http::Response r = http::Response::json(
      503, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  add_no_store(r);
  r.headers.emplace_back("retry-after",
                         std::to_string(std::max<std::int64_t>(0, outcome.retry_after.count())));
  return r;
}

http::Response error_outcome_response(const shapes::ReadOutcome& outcome) {
  if (const auto* refetch = std::get_if<shapes::MustRefetch>(&outcome))
    return must_refetch_response(*refetch);
  if (const auto* invalid = std::get_if<shapes::InvalidRequest>(&outcome))
    return service_invalid_response(*invalid);
  if (const auto* unavailable = std::get_if<shapes::Unavailable>(&outcome))
    return unavailable_response(*unavailable);
  return unavailable_response(shapes::Unavailable{"Unexpected read outcome", {}});
}

http::Params sse_headers(const shapes::ReadResult& first, const ShapeParams& params,
                         const ShapeApiOptions& options) {
  return {{"electric-handle", first.handle},
          {"electric-offset", offset_text(first.offset)},
          {"electric-cursor", cursor_header(params, options)},
          {"cache-control", success_cache_control(params, options)}};
}

http::Response shutdown_up_to_date_response(const ShapeParams& params,
                                            const ShapeApiOptions& options) {
  shapes::ReadResult result;
  result.handle = params.read.handle.value_or("");
  result.offset = params.read.offset;
  result.body = std::make_shared<const std::string>(R"([{"headers":{"control":"up-to-date"}}])");
  result.up_to_date = true;
  return read_response(result, params, options, std::nullopt);
}

}  // namespace shapeproxy::api
