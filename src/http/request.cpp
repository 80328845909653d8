#include "http/request.h"

#include <cctype>

namespace shapeproxy::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string percent_decode(std::string_view in, bool plus_as_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < in.size() && hex_value(in[i + 1]) >= 0 &&
               hex_value(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Params parse_query(std::string_view query) {
  Params out;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    out.emplace_back(percent_decode(name), percent_decode(value));
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

Request::Request(Verb method, std::string target, Params headers, std::string body)
    : method_(method),
      target_(std::move(target)),
      headers_(std::move(headers)),
      body_(std::move(body)) {
  std::string_view t = target_;
  size_t q = t.find('?');
  path_ = std::string(t.substr(0, q));
  if (q != std::string_view::npos) query_ = parse_query(t.substr(q + 1));
}

std::optional<std::string_view> Request::query(std::string_view name) const {
  for (const auto& [k, v] : query_)
    if (k == name) return std::string_view(v);
  return std::nullopt;
}

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers_)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

}  // namespace shapeproxy::http

namespace shapeproxy::http {
namespace {

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A qvalue ("0", "0.5", "1.000"): whether it is above zero. Anything that is
// not a qvalue counts as 1, the default.
bool q_positive(std::string_view q) {
  if (q.empty() || q.front() != '0') return true;
  for (char c : q.substr(1)) {
    if (c != '.' && c != '0') return true;
  }
  return false;
}

}  // namespace

bool accepts_gzip(const Request& request) {
  std::optional<bool> gzip;
  std::optional<bool> any;
  for (const auto& [name, value] : request.headers()) {
    if (!iequals(name, "accept-encoding")) continue;
    std::string_view list = value;
    while (!list.empty()) {
      const auto comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      const auto semicolon = item.find(';');
      const std::string_view coding = trim_ows(item.substr(0, semicolon));
      bool positive = true;
      for (auto rest = semicolon == std::string_view::npos ? std::string_view()
                                                           : item.substr(semicolon + 1);
           !rest.empty();) {
        const auto next = rest.find(';');
        std::string_view param = trim_ows(rest.substr(0, next));
        rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
        if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
          positive = q_positive(trim_ows(param.substr(2)));
        }
      }
      if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
        gzip = gzip.value_or(false) || positive;
      } else if (coding == "*") {
        any = positive;
      }
    }
  }
  return gzip ? *gzip : any.value_or(false);
}

}  // namespace shapeproxy::http
