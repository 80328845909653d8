// UnresumedFramesContext: an io_context whose pending handlers a test can
// destroy unrun, as the io_context's destructor does at a proxy's shutdown.
// A coroutine suspended on a timer or socket is owned by its pending
// handler, so its frame (and every local in it, e.g. a timer) is destroyed
// without ever resuming. Tests use it to check that nothing outside the
// frame still names what lived in it (issue 16, item 3: dangling timers).
//
// After destroy_pending() the context can still run handlers posted to it
// (restart() then poll(); not run(), which would wait for the destroyed
// handlers' work forever); its I/O and timer services are shut down.
#pragma once

#include <boost/asio/io_context.hpp>

namespace shapeproxy::testing {

class UnresumedFramesContext : public boost::asio::io_context {
 public:
  // Destroys every pending handler (and the coroutine frames they own) unrun.
  void destroy_pending() { shutdown(); }
};

}  // namespace shapeproxy::testing
