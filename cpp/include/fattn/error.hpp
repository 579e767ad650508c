#pragma once
// Errors the public API throws. Kernels never throw: every public entry point
// validates its arguments first and only then calls a kernel that trusts them.
#include <sstream>
#include <stdexcept>
#include <string>

namespace fattn {

// A bad shape, size or value. The message names the argument, what was
// expected and what came. Python sees ValueError.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// An element type the call does not support, or operands whose types
// disagree. Python sees TypeError.
class InvalidDType : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

// require(cond, "who", ": expected ", x, ", got ", y) throws InvalidArgument.
template <class... Parts>
inline void require(bool cond, const Parts&... parts) {
  if (!cond) throw InvalidArgument(detail::concat(parts...));
}
template <class... Parts>
inline void require_dtype(bool cond, const Parts&... parts) {
  if (!cond) throw InvalidDType(detail::concat(parts...));
}

}  // namespace fattn
