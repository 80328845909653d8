// The error code of a failed file operation, from its errno: a lack of
// resources (open files, memory) is "storage_resource", which says the data
// is fine and must not be discarded; anything else is "storage_io".
#pragma once

#include <cerrno>

#include "common/error_codes.h"

namespace shapeproxy::storage {

inline const char* storage_error_code(int errno_value) {
  switch (errno_value) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return error_codes::kStorageResource.data();  // a literal: NUL-terminated
    default:
      return "storage_io";
  }
}

}  // namespace shapeproxy::storage
