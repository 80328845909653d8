// on_exception: the completion token for coroutines the shapes core spawns
// and does not await (instead of asio::detached, which swallows exceptions).
// An exception escaping the coroutine is logged and `on_failure` runs on
// `executor` (the registry's strand), failing the requests that wait on it,
// so nothing is left wedged.
#pragma once

#include <spdlog/spdlog.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <exception>
#include <string>
#include <utility>

#include "common/text.h"

namespace shapeproxy::shapes {

template <class OnFailure>
auto on_exception(const boost::asio::any_io_executor& executor, const char* what,
                  OnFailure on_failure) {
  return boost::asio::bind_executor(
      executor, [what, on_failure = std::move(on_failure)](std::exception_ptr thrown) mutable {
        if (!thrown) return;
        std::string why = "unknown exception";
        try {
          std::rethrow_exception(thrown);
        } catch (const std::exception& e) {
          why = e.what();
        } catch (...) {
        }
        spdlog::error("shapes: {} threw: {}", what, text::log_safe(why));
        on_failure();
      });
}

// For work whose failure needs nothing more than the log line.
inline auto on_exception(const boost::asio::any_io_executor& executor, const char* what) {
  return on_exception(executor, what, [] {});
}

}  // namespace shapeproxy::shapes
