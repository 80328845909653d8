// The compiled parts of Boost.Asio and Boost.Beast, once for the whole
// program: every unit linking shapeproxy_asio is built with
// BOOST_ASIO_SEPARATE_COMPILATION and BOOST_BEAST_SEPARATE_COMPILATION, so
// their headers only declare what is defined here (see CMakeLists.txt).
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
