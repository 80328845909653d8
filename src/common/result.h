// Error values with context, and Result<T>: what a boundary returns instead of
// throwing through the event loop. An Error carries a machine-readable code
// (for PostgreSQL errors, the SQLSTATE), a human message, and an optional hint
// telling the operator what to do about it.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace shapeproxy {

struct Error {
  std::string code;     // e.g. SQLSTATE "42501", or a short slug like "connection_lost"
  std::string message;  // what happened, in a sentence
  std::string hint;     // what to do about it; may be empty

  std::string to_string() const {
    std::string out = message;
    if (!code.empty()) out += " [" + code + "]";
    if (!hint.empty()) out += " (hint: " + hint + ")";
    return out;
  }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace shapeproxy
