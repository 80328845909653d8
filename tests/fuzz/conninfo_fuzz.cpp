// libFuzzer target: DATABASE_URL / conninfo strings (URI or key=value) through
// validation, the replication variant and the secret-free description. The
// description must never contain the password.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "pg/conninfo.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy::pg;
  std::string text(reinterpret_cast<const char*>(data), size);
  if (text.find('\0') != std::string::npos) return 0;  // a C string in every real use
  auto valid = validate_conninfo(text);
  auto replication = replication_conninfo(text);
  if (valid.ok() != replication.ok()) std::abort();
  if (replication.ok() && validate_conninfo(*replication).ok() == false) std::abort();
  (void)describe_conninfo(text);
  return 0;
}
