// Shape::Operation: one row change a shape logs (from a replicated change or
// a refresh's diff). Private to Shape's own sources (shape.cpp,
// shape_refresh.cpp), which render and append it.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "shapes/shape.h"

namespace shapeproxy::shapes {

struct Shape::Operation {
  enum class Kind { kInsert, kUpdate, kDelete };
  Kind kind;
  std::string key;
  Row row;                           // insert/update: the new row; delete: the old row
  Row old_row;                       // update: the previous row
  std::vector<std::size_t> changed;  // update: served columns that changed
};

}  // namespace shapeproxy::shapes
