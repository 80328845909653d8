// When two where-clause values are equal, and how they order: the single
// rule behind both in-process evaluation (where_eval's comparisons, IN,
// BETWEEN, DISTINCT) and ShapeIndex routing (shapes keyed by the canonical
// key of their `column = constant` values). Keeping both here is what makes
// "a change is routed to a shape" agree with "the shape's clause matches".
// Invariant: for non-NULL a, b of one type,
//   compare_datums(t, a, b) == 0  <=>  canonical_datum_key(t, a) == canonical_datum_key(t, b).
#pragma once

#include <string>

#include "where/where_types.h"

namespace shapeproxy::where {

// Three-way comparison of two non-NULL datums of the same type, with
// PostgreSQL ordering (NaN greatest, text by bytes = C collation).
int compare_datums(SqlType type, const Datum& a, const Datum& b);

// A key equal for two non-NULL datums of `type` exactly when
// compare_datums() says they are equal: numeric 1.0 and 1 share one key,
// float -0 and 0 too, NaN equals NaN, text is bytewise.
std::string canonical_datum_key(SqlType type, const Datum& value);

}  // namespace shapeproxy::where
