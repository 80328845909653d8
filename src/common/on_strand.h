// Thread rules as checks, not comments. State owned by one strand is touched
// only from handlers running on it; a method that may only run there starts
// with SHAPEPROXY_ASSERT_ON_STRAND(executor_), which aborts with the method's
// name when it is called from anywhere else (a data race caught where it
// starts, not where it corrupts something later).
//
// Cheap (a type check and a walk of the thread's short stack of running
// strands), so it is on by default; -DSHAPEPROXY_THREAD_CHECKS=OFF at
// configure time compiles it out.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <cstdio>
#include <cstdlib>

namespace shapeproxy {

// Whether the calling thread runs a handler of `executor` (a strand of an
// io_context, or of any executor). Executors of other kinds cannot tell, and
// count as yes.
inline bool running_on(const boost::asio::any_io_executor& executor) {
  namespace asio = boost::asio;
  if (auto* strand = executor.target<asio::strand<asio::io_context::executor_type>>())
    return strand->running_in_this_thread();
  if (auto* strand = executor.target<asio::strand<asio::any_io_executor>>())
    return strand->running_in_this_thread();
  if (auto* plain = executor.target<asio::io_context::executor_type>())
    return plain->running_in_this_thread();
  return true;
}

[[noreturn]] inline void strand_violation(const char* function, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: %s must run on its strand; called from another thread\n", file, line,
               function);
  std::abort();
}

}  // namespace shapeproxy

#if defined(SHAPEPROXY_NO_THREAD_CHECKS)
#define SHAPEPROXY_ASSERT_ON_STRAND(executor) ((void)0)
#else
#define SHAPEPROXY_ASSERT_ON_STRAND(executor)                       \
  do {                                                              \
    if (!::shapeproxy::running_on(executor))                        \
      ::shapeproxy::strand_violation(__func__, __FILE__, __LINE__); \
  } while (0)
#endif
