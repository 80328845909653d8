// Lifetime: how the registry's collaborators keep the registry alive across
// asynchronous work. Everything they leave behind (timer callbacks, posts
// back from worker threads, coroutines) holds a weak reference from
// `lifetime()` and locks it before touching anything: the registry and all
// its collaborators stay alive while such a callback runs, and none runs
// once the registry is gone. Call lifetime() only from a live registry's
// strand (it is the registry's weak_from_this()).
#pragma once

#include <functional>
#include <memory>

namespace shapeproxy::shapes {

using Lifetime = std::function<std::weak_ptr<const void>()>;

}  // namespace shapeproxy::shapes
