// ShapeRegistry::describe: the held shapes as the status page lists them
// (kept apart from shape_registry.cpp: a read-only view of its state).
#include <boost/asio/post.hpp>

#include "shapes/shape_registry.h"

namespace shapeproxy::shapes {

void ShapeRegistry::describe(std::function<void(std::vector<ShapeDescription>)> done) {
  boost::asio::post(executor_, [self = shared_from_this(), done = std::move(done)] {
    std::vector<ShapeDescription> out;
    out.reserve(self->by_key_.size());
    for (const auto& [key, shape] : self->by_key_) {
      ShapeDescription d;
      d.handle = shape->handle();
      d.table = shape->table().schema + "." + shape->table().name;
      if (shape->definition().where) d.where = shape->definition().where->normalized();
      d.ready = shape->phase() == Shape::Phase::kReady;
      d.rows = shape->row_count();
      for (const auto& chunk : shape->log().chunks())
        d.snapshot_bytes += chunk.body ? chunk.body->size() : chunk.stored.length;
      if (auto it = self->waiters_.find(shape); it != self->waiters_.end())
        d.readers = it->second.size();
      out.push_back(std::move(d));
    }
    done(std::move(out));
  });
}

}  // namespace shapeproxy::shapes
