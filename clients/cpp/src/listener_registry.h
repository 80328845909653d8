// Registered callbacks of one kind, called in registration order. Removal is
// synchronous: once remove() returns, the callback is not running and will
// not run again (a callback may remove itself or others).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace shapeproxy::client::detail {

template <typename Event>
class ListenerRegistry {
 public:
  using Listener = std::function<void(const Event&)>;

  std::uint64_t add(Listener listener) {
    std::lock_guard lock(mutex_);
    std::uint64_t id = next_id_++;
    listeners_.emplace(id, std::make_shared<Listener>(std::move(listener)));
    return id;
  }

  void remove(std::uint64_t id) {
    std::lock_guard lock(mutex_);  // waits for a dispatch on another thread
    listeners_.erase(id);
  }

  void dispatch(const std::vector<Event>& events) {
    if (events.empty()) return;
    std::lock_guard lock(mutex_);
    for (const auto& event : events) {
      std::vector<std::pair<std::uint64_t, std::shared_ptr<Listener>>> snapshot(listeners_.begin(),
                                                                                listeners_.end());
      for (auto& [id, listener] : snapshot) {
        if (listeners_.count(id) == 0) continue;  // removed by an earlier callback
        (*listener)(event);
      }
    }
  }

  bool empty() const {
    std::lock_guard lock(mutex_);
    return listeners_.empty();
  }

 private:
  mutable std::recursive_mutex mutex_;
  std::map<std::uint64_t, std::shared_ptr<Listener>> listeners_;
  std::uint64_t next_id_ = 1;
};

}  // namespace shapeproxy::client::detail
