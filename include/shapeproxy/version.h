// The shapeproxy version, reported by --version and /v1/status.
#pragma once

namespace shapeproxy {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace shapeproxy
