// What: an HTTP request as handlers see it: method, raw target, path, the
// percent-decoded query parameters (an ordered multi-map) and the headers.
// Why: the shape API should depend on a small value type rather than on Beast's
// parser types, so it can be unit-tested by building a Request directly.
#pragma once

#include <ostream>  // before Beast: Boost 1.81's core/string_view.hpp needs it

#include <boost/beast/http/verb.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shapeproxy::http {

using Verb = boost::beast::http::verb;

// Ordered name/value pairs; used for query parameters and headers.
using Params = std::vector<std::pair<std::string, std::string>>;

class Request {
 public:
  Request() = default;
  // Splits `target` into path and query and decodes the query.
  Request(Verb method, std::string target, Params headers, std::string body = {});

  Verb method() const { return method_; }
  const std::string& target() const { return target_; }  // as sent, e.g. "/v1/shape?x=1"
  const std::string& path() const { return path_; }      // target before '?', not decoded
  const Params& query_params() const { return query_; }  // in order, duplicates kept
  const Params& headers() const { return headers_; }
  const std::string& body() const { return body_; }
  // HTTP version as 10 * major + minor (11 unless set_version() said so).
  unsigned version() const { return version_; }
  void set_version(unsigned version) { version_ = version; }

  // First value of query parameter `name` (exact, case-sensitive match).
  std::optional<std::string_view> query(std::string_view name) const;
  // Case-insensitive header lookup; first occurrence.
  std::optional<std::string_view> header(std::string_view name) const;

 private:
  Verb method_ = Verb::get;
  std::string target_;
  std::string path_;
  Params query_;
  Params headers_;
  std::string body_;
  unsigned version_ = 11;
};

// Decodes %XX escapes (and '+' as space when `plus_as_space`). Malformed
// escapes are kept verbatim rather than rejected.
std::string percent_decode(std::string_view in, bool plus_as_space = true);

// Parses "a=1&b=%20x&c" into {{"a","1"},{"b"," x"},{"c",""}}.
Params parse_query(std::string_view query);

// ASCII case-insensitive equality (header names).
bool iequals(std::string_view a, std::string_view b);

// Whether the request's Accept-Encoding fields (all of them) accept gzip
// (RFC 9110 12.5.3): "gzip" or "x-gzip", else "*", with a q-value above 0.
// No field: false (identity only, as curl and raw clients ask).
bool accepts_gzip(const Request& request);

}  // namespace shapeproxy::http
