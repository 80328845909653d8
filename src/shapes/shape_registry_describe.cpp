// ShapeRegistry::describe: the held shapes as the status page lists them
// (kept apart from shape_registry.cpp: a read-only view of its state).
#include <boost/asio/post.hpp>

#include "shapes/shape_registry.h"

namespace shapeproxy::shapes {

void ShapeRegistry::describe(std::function<void(std::vector<ShapeDescription>)> done) {
  boost::asio::post(executor_, [self = shared_from_this(), done = std::move(done)] {
    std::vector<ShapeDescription> out;
    for (const auto& shape : self->catalog_.all()) {
      ShapeDescription d;
      d.handle = shape->handle();
      d.table = shape->table().schema + "." + shape->table().name;
      if (shape->definition().where) d.where = shape->definition().where->normalized();
      d.ready = shape->phase() == Shape::Phase::kReady;
      d.rows = shape->row_count();
      for (const auto& chunk : shape->log().chunks())
        d.snapshot_bytes += chunk.body ? chunk.body->size() : chunk.stored.length;
      d.readers = self->parking_.parked_count(shape);
      out.push_back(std::move(d));
    }
    done(std::move(out));
  });
}

}  // namespace shapeproxy::shapes
