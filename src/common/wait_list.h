// WaitList: coroutines waiting for something to change (a free pooled
// connection, a shape's first snapshot), each suspended on its own timer,
// woken in order by wake_one() or all at once by wake_all().
//
// Why not a bare list of timer pointers: a waiting coroutine's frame can be
// destroyed without ever resuming (the io_context is destroyed while the wait
// is pending, and the frames go with its queued handlers). Its timer went with
// the frame; if the list still named it, the next wake (e.g. a Lease released
// by another frame destroyed in the same shutdown) cancelled freed memory:
// the heap corruption seen after "shapeproxy stopped" (issue 16, item 3).
//
// Invariants: a waiter is in the list from wait() until it is woken or its
// frame ends, however it ends; a woken waiter is out of the list at once, so
// two wake_one() calls before anyone resumes wake two waiters. The list may
// be destroyed before its waiters (they keep its storage alive). Not
// thread-safe: use from one strand.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <utility>

namespace shapeproxy {

class WaitList {
 public:
  // Suspends until a wake_one() or wake_all() after this call (an earlier
  // wake is not remembered: check the condition again after resuming).
  boost::asio::awaitable<void> wait(boost::asio::any_io_executor executor) {
    Slot slot(executor, waiters_);
    co_await slot.timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  // The same, and while this waiter is listed, `*wake_this` holds a function
  // that wakes it alone (e.g. a read's cancel). `*wake_this` is emptied when
  // the wait ends, however it ends, so it never names a freed waiter; it
  // must outlive the wait (keep its owner alive in the waiting frame).
  boost::asio::awaitable<void> wait(boost::asio::any_io_executor executor,
                                    std::function<void()>* wake_this) {
    Slot slot(executor, waiters_);
    struct Hook {
      std::function<void()>* wake;
      ~Hook() { *wake = nullptr; }
    } hook{wake_this};
    *wake_this = [&slot] {
      slot.unlist();
      slot.timer.cancel();
    };
    co_await slot.timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  void wake_one() {
    if (waiters_->empty()) return;
    Slot* slot = waiters_->front();
    slot->unlist();
    slot->timer.cancel();
  }

  void wake_all() {
    while (!waiters_->empty()) wake_one();
  }

  bool empty() const { return waiters_->empty(); }
  std::size_t size() const { return waiters_->size(); }

 private:
  struct Slot;
  using List = std::list<Slot*>;

  // Lives in the waiting coroutine's frame.
  struct Slot {
    Slot(const boost::asio::any_io_executor& executor, std::shared_ptr<List> list)
        : timer(executor, boost::asio::steady_timer::time_point::max()), list_(std::move(list)) {
      position_ = list_->insert(list_->end(), this);
    }
    ~Slot() { unlist(); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

    void unlist() {
      if (position_) list_->erase(*std::exchange(position_, std::nullopt));
    }

    boost::asio::steady_timer timer;

   private:
    std::shared_ptr<List> list_;
    std::optional<List::iterator> position_;
  };

  std::shared_ptr<List> waiters_ = std::make_shared<List>();
};

}  // namespace shapeproxy
