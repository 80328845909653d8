// What: the text forms of shape log offsets in the HTTP protocol: parsing the
// `offset` query parameter (-1, now, <tx>_<op>, <tx>_inf) and writing the
// electric-offset header.
// Why: the API must reject every malformed or overflowing offset with a 400
// (never crash), and must not depend on the shapes core's object files.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "shapes/log_offset.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

struct RequestedOffset {
  shapes::ReadRequest::Start start = shapes::ReadRequest::Start::kBeforeAll;
  shapes::LogOffset offset;  // with kAt
};

// Decimal digits only (no sign, no spaces), each part within 64 bits; the op
// part may be "inf". nullopt for anything else.
std::optional<RequestedOffset> parse_requested_offset(std::string_view text);

// "-1", "now" or "<tx>_<op>" as echoed in etags.
std::string requested_offset_text(const RequestedOffset& offset);

// "-1", "0_0", "123_4", "123_inf".
std::string offset_text(const shapes::LogOffset& offset);

}  // namespace shapeproxy::api
