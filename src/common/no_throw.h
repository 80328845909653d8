#pragma once
// kNoThrow: the completion token of a co_await that hands the error code back
// with the results (a tuple) instead of throwing it. One definition for every
// unit (they are compiled together in unity batches, cmake/unity.cmake).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace shapeproxy {
inline constexpr auto kNoThrow = boost::asio::as_tuple(boost::asio::use_awaitable);
}  // namespace shapeproxy
